"""Allocation-heavy Python workload with a deterministic result: dicts,
lists, strings, bytes, big integers, JSON, threads and a cycle-heavy GC
load. Prints one checksum line per part; the test compares the output
with the same script run under glibc malloc."""
import hashlib
import json
import random
import threading

rng = random.Random(12345)
h = hashlib.sha256()


def part(name, value):
    h.update(repr(value).encode())
    print(name, hashlib.sha256(repr(value).encode()).hexdigest()[:16])


# Dicts and strings of many sizes, grown and shrunk.
d = {}
for i in range(200_000):
    d[f"key{i}"] = "v" * (i % 300) + str(i)
for i in range(0, 200_000, 3):
    del d[f"key{i}"]
part("dict", sum(len(v) for v in d.values()))

# Lists of tuples, sorted; bytes objects up to 64 KiB.
rows = [(rng.random(), rng.randrange(10**9), "x" * rng.randrange(100)) for _ in range(150_000)]
rows.sort()
part("sort", rows[::5000])
blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) * rng.randrange(1, 1024) for _ in range(3000)]
part("bytes", sum(len(b) for b in blobs) + sum(b[-1] for b in blobs))
del blobs

# Big integers (realloc-heavy).
f = 1
for k in range(1, 3000):
    f *= k
part("bigint", f % (10**40 + 7))

# JSON round trip of a nested structure.
doc = {str(i): {"a": list(range(i % 50)), "b": {"s": "y" * (i % 70)}} for i in range(20_000)}
text = json.dumps(doc, sort_keys=True)
part("json", (len(text), json.loads(text)["19999"]["b"]["s"]))

# Threads allocating and freeing each other's objects.
shared = []
lock = threading.Lock()


def worker(seed):
    r = random.Random(seed)
    local = []
    for i in range(40_000):
        local.append("t" * r.randrange(1, 2000))
        if len(local) > 500:
            with lock:
                shared.append(local[: len(local) // 2])
            local = local[len(local) // 2 :]
    with lock:
        shared.append(local)


threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
part("threads", sorted(sum(len(s) for s in chunk) for chunk in shared)[-5:])


# Reference cycles for the collector.
class Node:
    def __init__(self, v):
        self.v = v
        self.next = None


total = 0
for round_ in range(20):
    nodes = [Node(i) for i in range(20_000)]
    for a, b in zip(nodes, nodes[1:] + nodes[:1]):
        a.next = b
    total += sum(n.next.v for n in nodes[::1000])
    del nodes
part("cycles", total)
print("all", h.hexdigest())
