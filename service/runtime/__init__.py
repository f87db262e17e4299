"""What strategies build on: the engine interface and implementations, budgets, the cost model, settings,
embeddings, model files and the exception tree. Imports nothing else of ours."""
