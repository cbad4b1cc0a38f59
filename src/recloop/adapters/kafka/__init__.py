"""Kafka adapters (aiokafka): the distributed deployment's event log, producer and consumer side."""

from __future__ import annotations

from recloop.adapters.kafka.log import (
    KafkaBatch,
    KafkaConfig,
    KafkaEventLog,
    KafkaEventSource,
    KafkaPosition,
    PartitionsHook,
    Undecodable,
)

__all__ = [
    "KafkaBatch",
    "KafkaConfig",
    "KafkaEventLog",
    "KafkaEventSource",
    "KafkaPosition",
    "PartitionsHook",
    "Undecodable",
]

from recloop.adapters.kafka.spool import SpooledEventLog as SpooledEventLog

__all__ += ["SpooledEventLog"]
