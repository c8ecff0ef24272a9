#!/usr/bin/env python3
"""Shares of a broker's CPU by component, from folded stacks
(`perf script | inferno-collapse-perf`). Each sample goes to the first
component (in the order below) whose pattern appears anywhere in its stack,
so "verify" wins over "sha512" when SHA-512 runs inside a verification.
Usage: bench/profile-share.py FOLDED [RECORDS_PER_SECOND_OF_SAMPLES]"""
import re
import sys

COMPONENTS = [
    ("signature verification", r"verify_strict|verify_batch|ed25519_dalek|curve25519"),
    ("fdatasync / disk I/O", r"fdatasync|sync_file_range|fsync|blk_|ext4_|xfs_"),
    ("storage (sled)", r"sled::"),
    ("storage (record and node files)", r"log::storage"),
    ("Merkle + tree head signing", r"log::merkle|SigningKey|sign_head|tree_head"),
    ("log writer (other)", r"log::writer"),
    ("publish checks", r"broker::publish|broker::verifier"),
    ("subscription delivery", r"broker::subscribe|broker::recent|broker::read"),
    ("protobuf and rules", r"prost::|rules::"),
    ("TLS (rustls, AES-GCM)", r"rustls|aws_lc|ring::|aes|gcm"),
    ("HTTP/2 + gRPC (h2, hyper, tonic)", r"h2::|hyper::|tonic::|tower::"),
    ("metrics", r"metrics::|metrics_exporter"),
    ("memory (malloc/free)", r"malloc|_int_free|cfree|realloc|memmove|memcpy"),
    ("scheduler + syscalls (tokio, kernel)", r"tokio::|\[k\]|entry_SYSCALL|futex|epoll|schedule"),
]


def main() -> None:
    totals: dict[str, int] = {}
    all_samples = 0
    with open(sys.argv[1]) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            all_samples += n
            name = "other"
            for label, pattern in COMPONENTS:
                if re.search(pattern, stack):
                    name = label
                    break
            totals[name] = totals.get(name, 0) + n
    for name, n in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{100 * n / all_samples:5.1f}%  {name}")
    print(f"{all_samples} samples")


if __name__ == "__main__":
    main()
