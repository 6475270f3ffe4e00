"""The plumbing every stage stands on: user errors, atomic files, the keyed result store.

Nothing in here imports a stage, a model or the CLI; stages import from here.
"""
