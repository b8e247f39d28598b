"""The detection core: rule files to compiled predicates, raw records to candidates, candidates to
sequences, sequences to Kibana alert documents. No I/O, no environment, no Kafka or Faust: the
replay CLI and the streaming service both drive it through ``Detector``.
"""

from app.core.detector import DetectionReport, Detector, Outcome, SequenceDetector, load_rules, survey_rules
from app.core.errors import EqlstreamError, RuleError, UnsupportedQuery
from app.core.model import Alert, AlertKind, Candidate, JoinKey, Rejection, RejectReason
from app.core.options import DetectionOptions
from app.core.rule import DEFAULT_RULE_PATH, CompiledRule

__all__ = [
    "DEFAULT_RULE_PATH",
    "Alert",
    "AlertKind",
    "Candidate",
    "CompiledRule",
    "DetectionOptions",
    "DetectionReport",
    "Detector",
    "EqlstreamError",
    "JoinKey",
    "Outcome",
    "Rejection",
    "RejectReason",
    "RuleError",
    "SequenceDetector",
    "UnsupportedQuery",
    "load_rules",
    "survey_rules",
]
