"""Requests and the continuous-batching scheduler.

>>> from infercore.cache import KVCacheConfig, KVCacheManager
>>> from infercore.sched import Request, Scheduler, SchedulerConfig
>>> sched = Scheduler(SchedulerConfig(max_num_seqs=8), KVCacheManager(KVCacheConfig(num_blocks=32)))
>>> sched.add(Request("r0", [5, 6, 7], max_tokens=2))
>>> out = sched.schedule()
>>> out.input_ids, out.positions, out.slot_mapping
([5, 6, 7], [0, 1, 2], [0, 1, 2])
>>> sched.update(out, [9])
[]
>>> out = sched.schedule()
>>> out.input_ids, out.positions, out.num_decodes
([9], [3], 1)
>>> [r.finish_reason.value for r in sched.update(out, [4])]
['length']
"""

from infercore.sched.config import SchedulerConfig
from infercore.sched.output import BatchArrays, ScheduledRequest, SchedulerOutput
from infercore.sched.policy import FCFSPolicy, PriorityPolicy, SchedulingPolicy
from infercore.sched.protocols import SchedulerProtocol
from infercore.sched.request import FinishReason, IllegalTransitionError, Request, RequestStatus
from infercore.sched.scheduler import Scheduler

__all__ = [
    "BatchArrays",
    "FCFSPolicy",
    "FinishReason",
    "IllegalTransitionError",
    "PriorityPolicy",
    "Request",
    "RequestStatus",
    "ScheduledRequest",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "SchedulerProtocol",
    "SchedulingPolicy",
]
