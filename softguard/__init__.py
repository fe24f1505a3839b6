"""softguard: distill a two-model safe LLM system (chat LLM + guard) into the LLM plus a soft prompt."""

__version__ = "0.1.0"
