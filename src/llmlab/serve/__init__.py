"""Local HTTP: the OpenAI-compatible server on the continuous-batching engine."""
