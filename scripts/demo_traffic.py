"""Send chats from a few dozen users through the gateway with the official openai client.

Used by `make demo`: prints how many requests each version answered and a
sample answer per version, so the 80/20 split and the per-user stickiness are
visible. Exits non-zero when the gateway does not answer or a version's
answers are missing.
"""

from __future__ import annotations

import argparse
import collections
import sys

import httpx
import openai
from rich.console import Console
from rich.table import Table


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--users", type=int, default=40)
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key="demo", max_retries=0, timeout=60)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    samples: dict[tuple[str, str], str] = {}
    sticky_ok = True
    for i in range(args.users):
        user = f"user-{i:03d}"
        seen: set[str] = set()
        for question in ("How do I reset my password?", "Where can I find my invoice?"):
            raw = client.chat.completions.with_raw_response.create(
                model=args.model, user=user, max_tokens=12, temperature=0,
                messages=[{"role": "user", "content": question}],
            )
            completion = raw.parse()
            key = (raw.headers["x-reg-version"], raw.headers["x-reg-stage"])
            seen.add(key[0])
            counts[key] += 1
            samples.setdefault(key, (completion.choices[0].message.content or "").strip())
        sticky_ok &= len(seen) == 1

    table = Table(title=f"{sum(counts.values())} requests from {args.users} users to "
                  f"model '{args.model}'", title_justify="left")
    for col in ("version", "stage", "requests", "share", "sample answer"):
        table.add_column(col)
    total = sum(counts.values())
    for (version, stage), n in sorted(counts.items()):
        table.add_row(version, stage, str(n), f"{100 * n / total:.0f}%", samples[(version, stage)])
    console = Console()
    console.print(table)
    console.print(f"Sticky per user: {'yes' if sticky_ok else 'NO'}")
    metrics = httpx.get(args.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    lines = [ln for ln in metrics.splitlines()
             if ln.startswith("reg_gateway_requests_total{") and f'model="{args.model}"' in ln]
    console.print("Per-version counters from /metrics:")
    for ln in lines:
        console.print(f"  {ln}", markup=False, highlight=False)
    return 0 if len(counts) >= 2 and sticky_ok else 1


if __name__ == "__main__":
    sys.exit(main())
