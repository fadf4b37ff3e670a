"""Prometheus expositions read back into numbers."""

from prometheus_client.parser import text_string_to_metric_families


def metric_samples(exposition: str) -> dict[tuple[str, tuple], float]:
    """(name, labels as a sorted tuple) -> value, from a Prometheus exposition parsed by prometheus_client's parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
