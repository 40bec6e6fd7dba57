"""LLM clients: one protocol (:mod:`.protocol`), one shared request loop (:mod:`.base`), two APIs
(:mod:`.ollama`, :mod:`.openai_compatible`), the response cache (:mod:`.cache`), the host pool and outages
(:mod:`.pool`) and call statistics (:mod:`.stats`)."""

from .ollama import DEFAULT_MODEL, OllamaResource
from .openai_compatible import OpenAICompatibleResource
from .protocol import (
    BudgetExhausted,
    CacheUnavailable,
    LLMCallFailed,
    LLMClient,
    LLMReply,
    ModelNotAvailable,
    PromptTooLong,
    ReplyRejected,
    RequestBudget,
    ServerDown,
    ServerUnavailable,
    is_outage,
    stop_text,
    stops_run,
)
from .stats import CallStats

APIS = {"ollama": OllamaResource, "openai": OpenAICompatibleResource}

__all__ = ["APIS", "DEFAULT_MODEL", "BudgetExhausted", "CacheUnavailable", "CallStats", "LLMCallFailed", "LLMClient",
           "LLMReply", "ModelNotAvailable", "OllamaResource", "OpenAICompatibleResource", "PromptTooLong",
           "ReplyRejected", "RequestBudget", "ServerDown", "ServerUnavailable", "is_outage", "stop_text", "stops_run"]
