"""The base station's OpenAI-compatible gateway: routes each request to the edge or the cloud LLM."""
