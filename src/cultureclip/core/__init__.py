"""The ground floor every stage stands on: config, registry, atomic files, user errors, the keyed result store.

Nothing in here imports a stage, a model or the CLI; stages import from here.
"""
