"""Sites, interventions and the hook seam."""

from ._hookset import HookSet
from ._interventions import Ablate, Add, Intervention, Patch, Replace
from ._sites import ModelConfig, Site, SiteInfo

__all__ = ["Ablate", "Add", "HookSet", "Intervention", "ModelConfig", "Patch", "Replace", "Site", "SiteInfo"]
