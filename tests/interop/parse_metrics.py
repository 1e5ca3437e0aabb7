"""Parse Prometheus text exposition with the official Python client's parser.

Usage: parse_metrics.py URL
Prints {"families": {name: {"type": ..., "samples": [[name, labels, value], ...]}}}
and exits 0, or prints the parser's error and exits 1.
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        text = response.read().decode("utf-8")
        content_type = response.headers.get("Content-Type", "")
    try:
        families = {
            family.name: {
                "type": family.type,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
            for family in text_string_to_metric_families(text)
        }
    except Exception as error:  # the parser raises plain ValueError and friends
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps({"content_type": content_type, "families": families}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
