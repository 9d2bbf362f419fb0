"""The activation store (sharded safetensors + manifest) and the feature database (one SQLite file)."""

from mechscope.store._explanations import Explanation, add_explanations
from mechscope.store._featuredb import FeatureDBConfig, build_feature_db, logit_effects
from mechscope.store._featuredb_query import (
    Example,
    FeatureDB,
    LatentCard,
    LatentSummary,
    TokenEffect,
    TokenMatch,
)
from mechscope.store._harvest import HarvestConfig, harvest
from mechscope.store._live import LiveActivations
from mechscope.store._store import ActivationStore, Manifest, Provenance, ProvenanceError, Shard, ShardData

__all__ = [
    "ActivationStore",
    "Example",
    "Explanation",
    "FeatureDB",
    "FeatureDBConfig",
    "HarvestConfig",
    "LatentCard",
    "LatentSummary",
    "LiveActivations",
    "Manifest",
    "Provenance",
    "ProvenanceError",
    "Shard",
    "ShardData",
    "TokenEffect",
    "TokenMatch",
    "add_explanations",
    "build_feature_db",
    "harvest",
    "logit_effects",
]
