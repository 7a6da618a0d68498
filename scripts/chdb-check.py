#!/usr/bin/env python3
"""The ClickHouse tables and analyst queries of Vigía on *current* ClickHouse.

ClickHouse 18.16 is what runs locally (and in the end-to-end tests); contract §6 (docs/contract.md) also promises current
releases. This script embeds current ClickHouse through the `chdb` package (run it through
scripts/chdb-check.sh, which provides a cached virtualenv) and:

1. creates every table and materialized view from sinks/migrations/*.sql, as `vigia migrate`
   does (statements end with a line ending in `;`, `--` lines are comments, `{db}.` is the
   database), reporting any statement current ClickHouse refuses and the adaptation that made it
   pass (none are needed as of chdb 4.x / ClickHouse 26.x);
2. loads the rows exported from an 18.16 run (`<dump>/<table>.tsv`, TabSeparatedWithNames; for
   `seller_hourly` none: its materialized views rebuild it from the tables it is built from,
   which checks the views too);
3. runs every ```sql block of docs/analytics.md (with `tenant_id = 42` replaced by each tenant
   given) and compares the answer with 18.16's (`<dump>/results/q<N>_t<tenant>.tsv`): same
   columns, same rows in the same order (rows of a query without ORDER BY compared as a set),
   numbers equal within 1e-9 relative.

Exit status 0 when everything matches, 1 otherwise; the report on stdout lists each difference.
Usage: chdb-check.sh --dump DIR [--tenants 1,2] [--doc docs/analytics.md]
       [--migrations sinks/migrations]
"""

import argparse
import glob
import math
import os
import re
import sys

DB = "vigia"
# Load order: the materialized views into seller_hourly fire on these inserts.
TABLES = ["events", "response_times", "notifications", "lead_scores", "dead_letters",
          "seller_metrics"]

# (pattern, replacement, why): tried in order on a statement current ClickHouse refuses.
ADAPTATIONS = []


def statements(path):
    out, cur = [], []
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.strip().startswith("--"):
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(cur).strip().rstrip(";"))
            cur = []
    if "".join(cur).strip():
        out.append("\n".join(cur).strip())
    return out


def questions(doc):
    """[(n, title, sql)] for every ```sql block, numbered in order, with its ## heading."""
    out, title = [], ""
    for block in re.finditer(r"^## ([^\n]*)$|^```sql\n(.*?)^```", doc, re.M | re.S):
        if block.group(1) is not None:
            title = block.group(1).strip()
        else:
            out.append((len(out) + 1, title, block.group(2).strip()))
    return out


def parse_tsv(text):
    lines = [l for l in text.split("\n") if l != ""]
    if not lines:
        return [], []
    return lines[0].split("\t"), [l.split("\t") for l in lines[1:]]


def same_cell(a, b):
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def same_rows(r1, r2):
    return len(r1) == len(r2) and all(
        len(a) == len(b) and all(same_cell(x, y) for x, y in zip(a, b)) for a, b in zip(r1, r2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--tenants", default="1,2")
    ap.add_argument("--doc", default="docs/analytics.md")
    ap.add_argument("--migrations", default="sinks/migrations")
    args = ap.parse_args()

    import chdb
    from chdb import session

    sess = session.Session()
    version = sess.query("SELECT version()", "TSV").bytes().decode().strip()
    print(f"chdb {chdb.__version__}, ClickHouse {version}")
    problems, notes = [], []

    # 1. The migrations.
    sess.query(f"CREATE DATABASE IF NOT EXISTS {DB}")
    for path in sorted(glob.glob(os.path.join(args.migrations, "*.sql"))):
        for st in statements(path):
            st = st.replace("{db}", DB)
            try:
                sess.query(st)
                continue
            except Exception as e:  # refused: try the known adaptations
                error = str(e).splitlines()[0][:300]
            for pattern, repl, why in ADAPTATIONS:
                adapted = re.sub(pattern, repl, st)
                if adapted == st:
                    continue
                try:
                    sess.query(adapted)
                    notes.append(f"DDL {os.path.basename(path)}: refused ({error}); "
                                 f"accepted after: {why}")
                    break
                except Exception:
                    pass
            else:
                problems.append(f"DDL {os.path.basename(path)}: refused: {error}\n{st}")
    print("migrations: " + ("all accepted unchanged" if not notes and not problems
                            else f"{len(notes)} adapted, {len(problems)} refused"))

    # 2. The rows of the 18.16 run.
    for table in TABLES:
        path = os.path.abspath(os.path.join(args.dump, f"{table}.tsv"))
        if not os.path.exists(path):
            problems.append(f"no dump of {table} ({path})")
            continue
        cols = sess.query(
            f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = '{table}' "
            f"ORDER BY position", "TSV").bytes().decode()
        structure = ", ".join(f"`{n}` {t}" for n, t in
                              (l.split("\t") for l in cols.strip().split("\n")))
        structure = structure.replace("\\'", "'")
        try:
            sess.query(f"INSERT INTO {DB}.{table} SELECT * FROM file('{path}', "
                       f"'TabSeparatedWithNames', '{structure.replace(chr(39), chr(92) + chr(39))}')")
        except Exception as e:
            problems.append(f"loading {table}: {str(e).splitlines()[0][:300]}")
            continue
        n = sess.query(f"SELECT count() FROM {DB}.{table}", "TSV").bytes().decode().strip()
        print(f"loaded {table}: {n} rows")

    # 3. The queries.
    doc = open(args.doc, encoding="utf-8").read()
    tenants = [t for t in args.tenants.split(",") if t]
    for n, title, sql in questions(doc):
        for t in tenants:
            q = sql.replace("tenant_id = 42", f"tenant_id = {t}")
            expected_path = os.path.join(args.dump, "results", f"q{n}_t{t}.tsv")
            if not os.path.exists(expected_path):
                problems.append(f"question {n} ({title}), tenant {t}: no 18.16 answer to compare")
                continue
            h1, r1 = parse_tsv(open(expected_path, encoding="utf-8").read())
            try:
                got = sess.query(q, "TabSeparatedWithNames").bytes().decode()
            except Exception as e:
                problems.append(f"question {n} ({title}), tenant {t}: current ClickHouse "
                                f"refused it: {str(e).splitlines()[0][:400]}")
                continue
            h2, r2 = parse_tsv(got)
            # Every query ends with ORDER BY except the UNION ALL one (its parts come in any order).
            ordered = "UNION ALL" not in q
            if h1 != h2:
                problems.append(f"question {n} ({title}), tenant {t}: columns differ: "
                                f"18.16 {h1}, current {h2}")
            elif not same_rows(r1 if ordered else sorted(r1), r2 if ordered else sorted(r2)):
                diff = [f"    18.16:   {a}\n    current: {b}"
                        for a, b in zip(r1, r2) if not same_rows([a], [b])][:5]
                problems.append(f"question {n} ({title}), tenant {t}: answers differ "
                                f"({len(r1)} vs {len(r2)} rows)\n" + "\n".join(diff))
            else:
                print(f"question {n} tenant {t}: same answer ({len(r1)} rows)")

    for note in notes:
        print("NOTE " + note)
    for p in problems:
        print("DIFFERENCE " + p)
    print("current ClickHouse: " + ("same answers as 18.16" if not problems
                                     else f"{len(problems)} difference(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
