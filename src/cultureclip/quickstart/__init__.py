"""The offline quickstart: an emoji-and-flag CulTwin world and the end-to-end flow.

``cultureclip.quickstart.pipeline.run_quickstart(QuickstartConfig(...))`` is what
``cultureclip quickstart`` runs; ``cultureclip.quickstart.world.build_world`` builds the
world alone.
"""
