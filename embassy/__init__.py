"""Embassy: a regional LLM serving graph behind an OpenAI-compatible API.

Nothing heavy is imported here, so `embassy --help` answers at once.
"""

__version__ = "0.1.0"
