"""Rebuild a pcc circuit in PyJuice from its structure file, so both systems run identical circuits.

Usage (on a machine with PyJuice):
    python3 bench/pyjuice_rebuild.py MODEL_DIR/structure.json
prints PyJuice's node/edge/parameter counts next to the file's own.

pcc's structure file (`structure.json`, format "pcc-structure" version 1) lists node vectors in
topological order, each with PyJuice's own block parameters:
  input:   var, num_blocks, block_size, dist {kind: categorical|bernoulli|gaussian|indicator}, tied_to?
  product: children, num_blocks, block_size, edges [num_blocks][num_children]  (PyJuice edge_ids)
  sum:     children, num_blocks, block_size, edges [[sum_block, child_block], ...] (PyJuice edge_ids.T), tied_to?
"""
import json
import sys


def load(path):
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != "pcc-structure" or doc.get("version") != 1:
        raise SystemExit(f"{path}: not a pcc structure file of version 1")
    return doc["circuit"]


def rebuild(circuit):
    import torch
    import pyjuice as juice
    from pyjuice.nodes import distributions as dists

    def dist_of(d):
        kind = d["kind"]
        if kind == "categorical":
            return dists.Categorical(num_cats=d["num_cats"])
        if kind == "bernoulli":
            return dists.Bernoulli()
        if kind == "gaussian":
            return dists.Gaussian(min_std=d["min_sigma"])
        raise SystemExit(f"no PyJuice equivalent used here for leaf kind {kind!r}")

    built = []
    for node in circuit["nodes"]:
        t = node["type"]
        if t == "input":
            if node.get("tied_to") is not None:
                ns = built[node["tied_to"]].duplicate(node["var"], tie_params=True)
            else:
                ns = juice.inputs(node["var"], num_node_blocks=node["num_blocks"],
                                  block_size=node["block_size"], dist=dist_of(node["dist"]))
        elif t == "product":
            chs = [built[c] for c in node["children"]]
            ns = juice.multiply(*chs, edge_ids=torch.tensor(node["edges"], dtype=torch.long))
        elif t == "sum":
            chs = [built[c] for c in node["children"]]
            if node.get("tied_to") is not None:
                ns = built[node["tied_to"]].duplicate(*chs, tie_params=True)
            else:
                edge_ids = torch.tensor(node["edges"], dtype=torch.long).t().contiguous()
                ns = juice.summate(*chs, num_node_blocks=node["num_blocks"],
                                   block_size=node["block_size"], edge_ids=edge_ids)
        else:
            raise SystemExit(f"unknown node type {t!r}")
        built.append(ns)
    return built[circuit["root"]]


def main():
    circuit = load(sys.argv[1])
    root = rebuild(circuit)
    import pyjuice as juice
    pc = juice.compile(root)
    print(json.dumps({"pyjuice_num_nodes": int(pc.num_nodes), "pyjuice_num_edges": int(pc.num_edges),
                      "pyjuice_num_sum_params": int(pc.num_sum_params)}))


if __name__ == "__main__":
    main()
