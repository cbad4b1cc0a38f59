"""Kafka's default partitioner over a batch (adapters/kafka/partitioning.py) against
aiokafka's own, one key at a time: the same partition for every key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from recloop.adapters.kafka.partitioning import murmur2_many, partitions_of

keys = st.lists(st.binary(max_size=80), max_size=60)


@given(keys)
def test_murmur2_of_a_batch_is_kafkas_of_each_key(batch: list[bytes]) -> None:
    assert murmur2_many(batch).tolist() == [murmur2(k) for k in batch]


@given(keys, st.integers(1, 64))
def test_each_key_goes_where_aiokafkas_partitioner_sends_it(batch: list[bytes], n: int) -> None:
    partitions = list(range(n))
    expected = [DefaultPartitioner()(k, partitions, partitions) for k in batch]
    assert partitions_of(batch, partitions).tolist() == expected


def test_user_ids_of_one_length_and_of_many() -> None:
    same = [f"user-{i:05d}".encode() for i in range(1000)]
    mixed = [f"user-{i}".encode() for i in range(1000)]
    for batch in (same, mixed):
        assert murmur2_many(batch).tolist() == [murmur2(k) for k in batch]
