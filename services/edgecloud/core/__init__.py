"""Small shared core: OpenAI wire models, errors, metrics helpers, server-sent events, settings."""
