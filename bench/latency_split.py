#!/usr/bin/env python3
"""Where a saga's time goes at 1 client, from a packet capture of loopback
(scripts/latency-split.sh takes it). Every saga is a fixed sequence of messages:
the start request reaches the coordinator (C>), then four times a batch statement
goes to Postgres (P>) and its answer comes back (P<), with a participant call (X>,
X<) after each of the first three, and the answer leaves for the client (C<). The
time between a statement and its answer is Postgres's, between a call and its
answer the participant's, and every other gap the coordinator's own (HTTP parsing,
the machine, the writer's queue, the tasks' wake-ups). Prints the medians per saga.

usage: latency_split.py CAPTURE.pcap [LABEL]
"""

import collections
import statistics
import struct
import sys

PG_PORT = 5432


def packets(path):
    """(time, source port, destination port, first payload bytes) per TCP segment."""
    data = open(path, "rb").read()
    nano = struct.unpack("<I", data[:4])[0] == 0xA1B23C4D
    link = struct.unpack("<I", data[20:24])[0]
    header = {0: 4, 1: 14, 113: 16}.get(link, 14)
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack("<IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + captured]
        offset += 16 + captured
        ip = frame[header:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        tcp = ip[(ip[0] & 15) * 4:]
        source, destination = struct.unpack(">HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        yield seconds + fraction / (1e9 if nano else 1e6), source, destination, payload[:20]


def main():
    path = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else path
    all_packets = list(packets(path))
    coordinator = {p[2] for p in all_packets if p[3].startswith(b"POST /v1/sagas")}
    participant = {
        p[2] for p in all_packets
        if p[3].startswith(b"POST /") and not p[3].startswith(b"POST /v1/")
    }

    def kind(source, destination):
        for ports, name in ((coordinator, "C"), ({PG_PORT}, "P"), (participant, "X")):
            if destination in ports:
                return name + ">"
            if source in ports:
                return name + "<"
        return None

    sagas, current = [], None
    for time, source, destination, _ in all_packets:
        k = kind(source, destination)
        if k == "C>":
            current = [(time, k)]
        elif k and current is not None:
            current.append((time, k))
            if k == "C<":
                sagas.append(current)
                current = None
    shapes = collections.Counter(" ".join(k for _, k in s) for s in sagas)
    if not shapes:
        sys.exit("latency_split: no saga found in the capture")
    usual = shapes.most_common(1)[0][0]
    split = collections.defaultdict(list)
    for saga in sagas:
        if " ".join(k for _, k in saga) != usual:
            continue  # a saga that met a retry or a second batch in the capture
        shares = collections.Counter()
        for (t0, a), (t1, b) in zip(saga, saga[1:]):
            owner = {("P>", "P<"): "postgres", ("X>", "X<"): "participant"}.get((a, b), "coordinator")
            shares[owner] += (t1 - t0) * 1000
        shares["total"] = (saga[-1][0] - saga[0][0]) * 1000
        for name, ms in shares.items():
            split[name].append(ms)
    median = {name: statistics.median(values) for name, values in split.items()}
    print(
        f"latency split {label}: sagas={len(split['total'])} of {len(sagas)} "
        f"total={median['total']:.3f} postgres={median['postgres']:.3f} "
        f"coordinator={median['coordinator']:.3f} participant={median['participant']:.3f} "
        "ms per saga (medians)"
    )


if __name__ == "__main__":
    main()
