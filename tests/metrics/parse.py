"""Parses a metrics exposition from standard input with the Prometheus client library's
own parsers and prints it as JSON: {"families": {name: type}, "samples": [[name, labels, value]]}.

Usage: parse.py text|openmetrics
"""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

parse = {"text": parse_text, "openmetrics": parse_openmetrics}[sys.argv[1]]
families, samples = {}, []
for family in parse(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
json.dump({"families": families, "samples": samples}, sys.stdout)
