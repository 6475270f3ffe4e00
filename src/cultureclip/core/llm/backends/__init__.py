"""Built-in chat-model backends: one module each, registered in ``LLMS`` on import."""
