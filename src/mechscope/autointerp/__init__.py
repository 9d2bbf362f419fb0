"""Auto-interpretation: explain latents in words, score the explanations, check both on planted features.

Contexts come from the feature database (and, for non-activating ones, the activation store encoded by the
dictionary); explainers and scorers are declared once (``EXPLAINERS``, ``SCORERS``); ``explain`` and ``score``
are resumable jobs whose rows live in the feature database; ``planted_db`` and ``ground_truth`` check the
pipeline on latents whose meaning is known. Guide: ``docs/autointerp.md``.
"""

from mechscope.autointerp._contexts import (
    ContextConfig,
    LatentContexts,
    NegativePool,
    Window,
    gather,
    store_context_tokens,
)
from mechscope.autointerp._embed import ContextStates
from mechscope.autointerp._explainers import EXPLAINERS, PROMPT_VERSION, Explanation, LLMConfig, TokensConfig
from mechscope.autointerp._jobs import Checkpoint, JobSummary, derange, explain, score
from mechscope.autointerp._llm import AnswerProbs, Chat, ChatError, HTTPChat, LocalChat
from mechscope.autointerp._output import DictionarySteerer, OutputConfig, Steerer
from mechscope.autointerp._planted import (
    FEATURE_SETS,
    FIND,
    PLANTED,
    RANDOM_DESCRIPTIONS,
    OracleDictionary,
    Planted,
    planted_db,
)
from mechscope.autointerp._records import ExplanationRecord, Records, ScoreRecord, read_explanations, read_scores
from mechscope.autointerp._scorers import SCORERS, EmbeddingConfig, JudgeConfig, Score, SimulationConfig, Tools
from mechscope.autointerp._simulate import LLMSimulationConfig
from mechscope.autointerp._truth import GroundTruth, Recovery, ScorerCheck, ground_truth

__all__ = [
    "EXPLAINERS",
    "FEATURE_SETS",
    "FIND",
    "PLANTED",
    "PROMPT_VERSION",
    "RANDOM_DESCRIPTIONS",
    "SCORERS",
    "AnswerProbs",
    "Chat",
    "ChatError",
    "Checkpoint",
    "ContextConfig",
    "ContextStates",
    "DictionarySteerer",
    "EmbeddingConfig",
    "Explanation",
    "ExplanationRecord",
    "GroundTruth",
    "HTTPChat",
    "JobSummary",
    "JudgeConfig",
    "LLMConfig",
    "LLMSimulationConfig",
    "LatentContexts",
    "LocalChat",
    "NegativePool",
    "OracleDictionary",
    "OutputConfig",
    "Planted",
    "Records",
    "Recovery",
    "Score",
    "ScoreRecord",
    "ScorerCheck",
    "SimulationConfig",
    "Steerer",
    "TokensConfig",
    "Tools",
    "Window",
    "derange",
    "explain",
    "gather",
    "ground_truth",
    "planted_db",
    "read_explanations",
    "read_scores",
    "score",
    "store_context_tokens",
]
