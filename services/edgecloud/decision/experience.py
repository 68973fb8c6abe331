"""An experience E (eq. 9): keywords, decision, reward, Good/Bad evaluation, and the measurements behind them."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecloud.core.vocabulary import Action, Evaluation, TaskState


@dataclass(frozen=True)
class Experience:
    state: TaskState
    action: Action
    reward: float
    transmission_s: float
    generation_s: float
    quality_met: bool
    evaluation: Evaluation = Evaluation.GOOD
    created_at: float = field(default_factory=time.time)
    source: str = ""
    request_id: str = ""
    experience_id: str = ""
    """The sender's unique id (``ExperienceRequest.experience_id``): a pool records one id once."""

    def evaluated(self, evaluation: Evaluation) -> Experience:
        return Experience(**{**self.__dict__, "evaluation": evaluation})

    def to_json(self) -> str:
        record = asdict(self)
        record["state"] = self.state.key
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Experience:
        record: dict[str, Any] = json.loads(text)
        record["state"] = TaskState.from_key(record["state"])
        record["action"] = Action(record["action"])
        record["evaluation"] = Evaluation(record["evaluation"])
        return cls(**record)
