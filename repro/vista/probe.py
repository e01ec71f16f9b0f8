"""Run by Vista's interpreter (standard library only): can it import what Vista's sample.py
imports, and the modules its inference config instantiates? Prints one JSON object.

    <vista python> probe.py <checkout>
"""
import ast
import json
import os
import re
import sys


def statements(script):
    """The module-level import statements of `script`, as source lines."""
    with open(script) as handle:
        tree = ast.parse(handle.read(), script)
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += ["import " + alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = ", ".join(alias.name for alias in node.names)
            found.append("from %s import %s" % (node.module, names))
    return found


def config_modules(config):
    """Modules named by `target:` entries of the model config (instantiated at start-up)."""
    if not os.path.isfile(config):
        return []
    with open(config) as handle:
        targets = re.findall(r"^\s*target:\s*([\w.]+)\s*$", handle.read(), re.M)
    return sorted({"import " + target.rsplit(".", 1)[0] for target in targets if "." in target})


def main():
    checkout = os.path.abspath(sys.argv[1])
    os.chdir(checkout)
    sys.path.insert(0, checkout)
    report = {"python": sys.executable, "version": sys.version.split()[0], "failed": {}}
    checks = statements("sample.py") + config_modules("configs/inference/vista.yaml")
    for line in checks:
        try:
            exec(line, {})
        except BaseException as err:   # noqa: B902 - any failure is the answer
            report["failed"][line] = "%s: %s" % (type(err).__name__, err)
    report["checked"] = checks
    torch = sys.modules.get("torch")
    report["cuda"] = bool(torch.cuda.is_available()) if torch is not None else None
    print("REPRO-PROBE " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
