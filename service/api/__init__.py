"""The HTTP API: app factory, routes, OpenAI serving, protocol models, error mapping. Top layer."""
