"""The config stage: a study file in, a validated Study (and TrialConfigs) out.

One job a module: ``trial`` (the trial sections), ``study`` (search, pruners, resources,
tracking, report), ``yaml_tree`` (safe YAML with line numbers, ${VAR}), ``loading``
(load_study -> LoadedStudy), ``checks`` (cross-field checks, one-line errors), ``overrides``
(dotted-path ``--set`` values). The config stage knows nothing of execution.
"""

from bkd_sweep.config.base import Seed, Strict, flatten
from bkd_sweep.config.errors import StudyError
from bkd_sweep.config.loading import LoadedStudy, load_study, load_study_text, study_json_schema
from bkd_sweep.config.overrides import apply_overrides, parse_override
from bkd_sweep.config.study import (KNOWN_METRICS, LINKED_PREFIX, LOWER_IS_BETTER,
                                    TRIAL_SECTIONS, AutoPrunerConfig, CategoricalParam,
                                    HyperbandPrunerConfig, MedianPrunerConfig, NoPrunerConfig,
                                    Objective, ParetoSpec, PercentilePrunerConfig, PrunerConfig,
                                    RangeParam, ReportConfig, ResourcesConfig, SearchConfig, Study,
                                    SuccessiveHalvingPrunerConfig, TableSpec,
                                    ThresholdPrunerConfig, TrackingConfig, TrialResources)
from bkd_sweep.config.trial import (AugmentConfig, DataConfig, DistillConfig, EnergyConfig,
                                    NeuronConfig, OptimizerConfig, StudentConfig,
                                    TeacherConfig, TeacherTrainConfig, TrainConfig, TrialConfig)

__all__ = [
    "AugmentConfig", "AutoPrunerConfig", "CategoricalParam", "DataConfig", "DistillConfig", "EnergyConfig",
    "HyperbandPrunerConfig", "KNOWN_METRICS", "LINKED_PREFIX", "LoadedStudy", "MedianPrunerConfig",
    "NeuronConfig", "NoPrunerConfig", "Objective", "OptimizerConfig", "ParetoSpec",
    "PercentilePrunerConfig", "PrunerConfig", "RangeParam", "ReportConfig", "ResourcesConfig",
    "SearchConfig", "Seed", "Strict", "StudentConfig", "Study", "StudyError",
    "LOWER_IS_BETTER", "SuccessiveHalvingPrunerConfig", "TRIAL_SECTIONS", "TableSpec",
    "TeacherConfig",
    "TeacherTrainConfig", "ThresholdPrunerConfig", "TrackingConfig", "TrainConfig", "TrialConfig",
    "TrialResources", "apply_overrides", "flatten", "load_study", "load_study_text",
    "parse_override", "study_json_schema",
]
