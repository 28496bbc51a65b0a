"""Validates OCSF events (JSON Lines) against the OCSF JSON Schema of each event's class, version
and profiles, offline (ocsf-json-schema ships the schemas). Used by tests/tests/ocsf.rs.

    ocsf_check.py FILE...

Prints one line per invalid event and exits 1 if any is invalid (2 on unreadable input).
"""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def main(paths):
    schemas = {}
    validators = {}
    bad = 0
    seen = 0
    for path in paths:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as e:
            print(f"{path}: {e}")
            return 2
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            seen += 1
            try:
                event = json.loads(line)
                version = event["metadata"]["version"]
                profiles = tuple(sorted(event["metadata"].get("profiles", [])))
                class_uid = event["class_uid"]
            except (ValueError, KeyError, TypeError) as e:
                print(f"{path}:{n}: not an OCSF event: {e}")
                bad += 1
                continue
            key = (version, class_uid, profiles)
            if key not in validators:
                if version not in schemas:
                    schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
                schema = schemas[version]
                name = schema.lookup_class_name_from_uid(class_uid)
                validators[key] = Draft202012Validator(schema.get_class_schema(name, list(profiles)))
            errors = sorted(validators[key].iter_errors(event), key=lambda e: list(e.path))
            for e in errors:
                where = "/".join(str(p) for p in e.path) or "(event)"
                print(f"{path}:{n}: class {class_uid}: {where}: {e.message}")
            bad += bool(errors)
    print(f"{seen} event(s), {bad} invalid", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
