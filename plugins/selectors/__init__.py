"""Built-in selectors: random, whole-pool uncertainty, M-RARU, diversity, TypiClust (cold start), LLKD,
cluster-margin and noise-aware."""

from kdstudio.hookspecs import hookimpl
from kdstudio_plugins.selectors.cluster_margin import ClusterMarginSelector
from kdstudio_plugins.selectors.diversity import DiversitySelector, TypiClustSelector
from kdstudio_plugins.selectors.llkd import LLKDSelector
from kdstudio_plugins.selectors.mraru import MRARUSelector
from kdstudio_plugins.selectors.noise_aware import NoiseAwareSelector
from kdstudio_plugins.selectors.uncertainty import (
    EntropySelector,
    LeastConfidenceSelector,
    MarginSelector,
    RandomSelector,
)


@hookimpl
def register_selectors(register):
    for selector in (RandomSelector, LeastConfidenceSelector, MarginSelector, EntropySelector, MRARUSelector,
                     DiversitySelector, TypiClustSelector, LLKDSelector, ClusterMarginSelector, NoiseAwareSelector):
        register(selector)
