"""Renders and checks the dfdwatch Helm chart with the real Helm library; run by tests/tests/deploy.rs.

Commands (each exits non-zero with a message on stderr when something is wrong):
  render CHART --out FILE [--monitoring-out FILE] [--json-out FILE] [--values FILE]...
         [--set KEY=STRING]... [--set-file KEY=PATH]...
      `helm template` through helm-python-sdk (Helm's Go SDK): writes the manifests in Helm's
      install order; with --monitoring-out, the Prometheus Operator and Grafana objects go there;
      --json-out writes every object as one JSON array.
  lint CHART      `helm lint`; any warning or error fails.
  crds FILE --rules-out FILE --expect-rules FILE
      Checks every ServiceMonitor and PrometheusRule in FILE against the prometheus-operator CRD
      models, refusing unknown fields; the PrometheusRule's spec must equal the rules file
      --expect-rules, and is written to --rules-out for promtool.
"""

import argparse
import json
import os
import sys

import yaml

# Helm's install order for the kinds the chart makes (helm/pkg/release/util/kind_sorter.go).
KIND_ORDER = ["ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Service", "DaemonSet"]
MONITORING_TEMPLATES = ("servicemonitor.yaml", "prometheusrule.yaml", "dashboard.yaml")
HEADER = (
    "# Generated from the Helm chart deploy/helm/dfdwatch with {values}: do not edit; regenerate\n"
    "# with the command in docs/deploy.md (a test checks that this file is up to date).\n"
)


def fail(message):
    print(f"deploy_check: {message}", file=sys.stderr)
    sys.exit(1)


def set_path(values, dotted, value):
    """Sets KEY (dots separate levels, `\\.` is a literal dot, as in `helm --set-file`)."""
    parts = dotted.replace("\\.", "\0").split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part.replace("\0", "."), {})
    node[parts[-1].replace("\0", ".")] = value


def merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def render(args):
    import helm_python as helm

    values = {}
    for path in args.values:
        with open(path, encoding="utf-8") as f:
            merge(values, yaml.safe_load(f) or {})
    for item in args.set:
        key, _, value = item.partition("=")
        set_path(values, key, value)
    for item in args.set_file:
        key, _, path = item.partition("=")
        with open(path, encoding="utf-8") as f:
            set_path(values, key, f.read())
    with helm.Chart.load(args.chart) as chart:
        rendered = chart.render(values, name=args.release, namespace=args.namespace)
    main, monitoring = [], []
    for source, text in rendered.items():
        if not source.endswith(".yaml") or not text.strip():
            continue
        for doc in text.split("\n---\n"):
            if not doc.strip():
                continue
            obj = yaml.safe_load(doc)
            kind = obj.get("kind", "")
            order = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
            entry = (order, kind, obj["metadata"]["name"], f"---\n# Source: {source}\n{doc.strip()}\n")
            to_monitoring = args.monitoring_out and source.endswith(MONITORING_TEMPLATES)
            (monitoring if to_monitoring else main).append(entry)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    header = HEADER.format(values=" and ".join(os.path.relpath(v, root) for v in args.values)) if args.values else ""
    for path, docs in ((args.out, main), (args.monitoring_out, monitoring)):
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(header + "".join(d[3] for d in sorted(docs)))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump([yaml.safe_load(d[3]) for d in sorted(main + monitoring)], f)


def lint(args):
    import helm_python as helm

    result = helm.lint(args.chart)
    # Helm's severities: 1 info, 2 warning, 4 error.
    bad = [m for m in result.get("messages", []) if m.get("severity", 0) >= 2] + list(result.get("errors", []))
    if bad:
        fail(f"helm lint {args.chart}: {bad}")


def unknown_fields(given, known, path):
    """Paths in `given` that the model dropped (it ignores unknown fields instead of refusing them)."""
    if isinstance(given, dict) and isinstance(known, dict):
        out = []
        for key, value in given.items():
            if key not in known:
                out.append(f"{path}.{key}")
            else:
                out += unknown_fields(value, known[key], f"{path}.{key}")
        return out
    if isinstance(given, list) and isinstance(known, list):
        return [p for i, (g, k) in enumerate(zip(given, known)) for p in unknown_fields(g, k, f"{path}[{i}]")]
    return []


def crds(args):
    from cloudcoil.models.prometheus_operator import v1

    models = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}
    with open(args.file, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    seen = set()
    for doc in docs:
        model = models.get(doc.get("kind"))
        if model is None:
            continue
        seen.add(doc["kind"])
        try:
            parsed = model.model_validate(doc)
        except Exception as e:  # pydantic's ValidationError lists every problem
            fail(f"{doc['kind']} {doc['metadata'].get('name')}: {e}")
        extra = unknown_fields(doc, parsed.model_dump(mode="json", by_alias=True, exclude_none=True), doc["kind"])
        if extra:
            fail(f"fields the prometheus-operator CRD does not define: {', '.join(extra)}")
        if doc["kind"] == "PrometheusRule":
            with open(args.expect_rules, encoding="utf-8") as f:
                if doc["spec"] != yaml.safe_load(f):
                    fail(f"the PrometheusRule's spec differs from {args.expect_rules}")
            with open(args.rules_out, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc["spec"], f, sort_keys=False)
    missing = set(models) - seen
    if missing:
        fail(f"{args.file}: no {', '.join(sorted(missing))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render")
    p.add_argument("chart")
    p.add_argument("--out", required=True)
    p.add_argument("--monitoring-out")
    p.add_argument("--json-out")
    p.add_argument("--values", action="append", default=[])
    p.add_argument("--set", action="append", default=[], help="KEY=STRING")
    p.add_argument("--set-file", action="append", default=[])
    p.add_argument("--release", default="dfdwatch")
    p.add_argument("--namespace", default="dfdwatch")
    p.set_defaults(run=render)
    p = sub.add_parser("lint")
    p.add_argument("chart")
    p.set_defaults(run=lint)
    p = sub.add_parser("crds")
    p.add_argument("file")
    p.add_argument("--rules-out", required=True)
    p.add_argument("--expect-rules", required=True)
    p.set_defaults(run=crds)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
