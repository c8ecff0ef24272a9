"""Checks JSON instances against JSON Schemas, for tests/interop_stix.rs.

Usage: python check_json_schemas.py CHECKS.json

CHECKS.json is {"schemas": {NAME: SCHEMA}, "checks": [{"where": TEXT,
"schema": NAME, "instance": VALUE}]}. Every instance is validated (JSON
Schema draft 2020-12, with format checks) against its named schema. One line
per check: "ok<TAB>WHERE" or "FAIL<TAB>WHERE<TAB>SCHEMA<TAB>PATH: MESSAGE" (one
line per error). Exit status 1 if any check failed, 2 on a usage error.
"""

import json
import sys

from jsonschema import Draft202012Validator, FormatChecker


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    validators = {}
    for name, schema in spec["schemas"].items():
        Draft202012Validator.check_schema(schema)
        validators[name] = Draft202012Validator(schema, format_checker=FormatChecker())
    failed = False
    for check in spec["checks"]:
        where, name = check["where"], check["schema"]
        errors = sorted(validators[name].iter_errors(check["instance"]), key=lambda e: list(e.path))
        if not errors:
            print(f"ok\t{where}")
            continue
        failed = True
        for e in errors:
            path = "/".join(str(p) for p in e.absolute_path) or "(root)"
            print(f"FAIL\t{where}\t{name}\t{path}: {e.message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
