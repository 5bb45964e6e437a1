"""The package's shape stays as docs/map.md describes it: no import circle between
fastconv's modules (counting the imports inside functions too, which only hide a
circle until the first call), nothing inside imports a name from the package face
(fastconv/__init__.py imports everything else, so that would be a circle), and the
package root holds the library's few shared modules, each subsystem in its package."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fastconv"


def _modules():
    """{dotted name: path} of every module of the package."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name, path, mods):
    """The fastconv modules that module `name` imports, anywhere in its body."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fastconv")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1]
                                + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "fastconv":
                base = node.module
            else:
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in mods else base)
    return {m for m in found if m in mods and m != name}


MODS = _modules()
EDGES = {name: _imports(name, path, MODS) for name, path in MODS.items()}


def _cycles():
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(EDGES[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(EDGES):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_relative_imports():
    # the checker itself: a lazy relative import inside a function is an edge
    assert "fastconv.models.saving" in EDGES["fastconv.models.model"] \
        or "fastconv.models.saving" in EDGES["fastconv.models.sequential"]
    assert "fastconv.kernels" in EDGES["fastconv.kernels.cpu"]


def test_no_import_circle():
    assert _cycles() == []


def test_nothing_inside_imports_the_package_face():
    face = {name for name, deps in EDGES.items() if "fastconv" in deps}
    assert face <= {"fastconv.__main__"}, f"these import from fastconv/__init__.py: {sorted(face)}"


def test_the_package_root_holds_only_shared_modules():
    # A subsystem (cli, data, distributed, kernels, layers, models, testing) lives in its package;
    # the root keeps the public Keras-named modules and small shared helpers.
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 13, root
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()) == \
        ["cli", "data", "distributed", "kernels", "layers", "models", "optimizers", "testing"]
