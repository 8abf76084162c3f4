"""Parser throughput per input format, as a ratio to DuckDB's own read_csv on the same rows.

    uv run python bench/parsers.py --records 200000

For each format it writes N synthetic records (bench/out/), then measures on this machine:
- parse: the reader's records/s (parsing only);
- load: parse plus loading into a scratch DuckDB raw table;
- cpu: records per CPU-second of parse + load (``time.process_time`` of the measuring process), which other
  processes on a shared machine disturb much less than wall time;
- reference: DuckDB read_csv of the same rows as a plain UTF-8 CSV (all cores, and on one thread), the speed
  of light of parsing here;
- ceiling: DuckDB alone loading those reference rows into the warehouse's ``raw.bank_transaction`` on one
  thread (read_csv -> INSERT -> COMMIT), the speed of light of a load: what writing the raw layer costs;
- peak RSS of the measuring process, and its growth during parse + load (flat growth = streaming).

"Per core": every format is measured in its own process with ``POLARS_MAX_THREADS=1`` and DuckDB
``threads=1`` (``--threads`` changes it), so a set-based path (bank CSV, 1C, CRM CSV, MT940, camt) gets one core like
the Python readers. ``1c`` is the set-based fast path (``onec.load_bulk``), ``1c_reference`` the reference reader
(``onec.read``) on the same file; likewise ``crm_csv`` (``crm.load_bulk``, a canonical invoices dump) and
``crm_csv_reference`` (``crm.read``), ``mt940`` (``mt940.load_bulk``; plain German ``?20`` statements) and
``mt940_reference`` (``mt940.read``), and ``camt`` (``camt.load_bulk``, the columnar tokenizer; a camt.053.001.08
statement, one entry per line) and ``camt_reference`` (``camt.read``, lxml).
Targets from the bank-ingestion issue are printed beside the measurements. Nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from sources import registry  # noqa: E402
from warehouse.db import connect  # noqa: E402
from warehouse.load import FileStats, ingest_bulk, ingest_records  # noqa: E402

OUT = Path(__file__).with_name("out")
TARGETS = {"bank_csv": 1_000_000, "sparkasse_csv": 1_000_000, "1c": 200_000, "1c_reference": 200_000,
           "mt940": 200_000, "mt940_reference": 200_000, "camt": 100_000, "camt_reference": 100_000, "crm_csv": 0,
           "crm_csv_reference": 0}  # CRM: no issue target


def rows(n: int, seed: int = 1):
    rng = random.Random(seed)
    day0 = dt.date(2024, 1, 1)
    for i in range(n):
        amount = Decimal(rng.randint(-500_000, 900_000)) / 100
        yield (day0 + dt.timedelta(days=i * 730 // max(n, 1)), amount, f"Client {rng.randint(1, 5000)} GmbH",
               f"DE{rng.randint(10, 99)}{rng.randint(10**17, 10**18 - 1)}", f"Invoice {i}", f"R{i}")


def write_generic(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("account,booking_date,value_date,amount,currency,counterparty_name,counterparty_account,purpose,"
                 "reference\n")
        for day, amount, name, iban, purpose, ref in rows(n):
            fh.write(f"DE89370400440532013000,{day},{day},{amount},EUR,{name},{iban},{purpose},{ref}\n")


def write_sparkasse(path: Path, n: int) -> None:
    with path.open("w", encoding="cp1252", newline="") as fh:
        fh.write('"Auftragskonto";"Buchungstag";"Valutadatum";"Buchungstext";"Verwendungszweck";"Glaeubiger ID";'
                 '"Mandatsreferenz";"Kundenreferenz (End-to-End)";"Sammlerreferenz";"Lastschrift Ursprungsbetrag";'
                 '"Auslagenersatz Ruecklastschrift";"Beguenstigter/Zahlungspflichtiger";"Kontonummer/IBAN";'
                 '"BIC (SWIFT-Code)";"Betrag";"Waehrung";"Info"\r\n')
        for day, amount, name, iban, purpose, ref in rows(n):
            fh.write(f'"DE02120300000000202051";"{day:%d.%m.%y}";"{day:%d.%m.%y}";"GUTSCHR.";"{purpose}";"";"";'
                     f'"{ref}";"";"";"";"Müller {name}";"{iban}";"";"{str(amount).replace(".", ",")}";"EUR";'
                     '"Umsatz gebucht"\r\n')


def write_camt(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.'
                 '001.08"><BkToCstmrStmt><Stmt><Id>S1</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id>'
                 '<Ccy>EUR</Ccy></Acct>\n')
        for day, amount, name, iban, purpose, ref in rows(n):
            ind = "CRDT" if amount >= 0 else "DBIT"
            role = "Dbtr" if amount >= 0 else "Cdtr"
            fh.write(f'<Ntry><Amt Ccy="EUR">{abs(amount)}</Amt><CdtDbtInd>{ind}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>'
                     f'<BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt><AcctSvcrRef>{ref}</AcctSvcrRef>'
                     f'<NtryDtls><TxDtls><Refs><EndToEndId>{ref}</EndToEndId></Refs><RltdPties><{role}><Pty><Nm>'
                     f'{name}</Nm></Pty></{role}><{role}Acct><Id><IBAN>{iban}</IBAN></Id></{role}Acct></RltdPties>'
                     f'<RmtInf><Ustrd>{purpose}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>\n')
        fh.write("</Stmt></BkToCstmrStmt></Document>\n")


def write_mt940(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        for start in range(0, n, 500):
            fh.write(f":20:STMT{start}\r\n:25:DE89370400440532013000\r\n:28C:{start // 500 + 1}/1\r\n"
                     ":60F:C240101EUR0,00\r\n")
            for day, amount, name, iban, purpose, ref in _ROWS[start:min(start + 500, n)]:
                mark = "C" if amount >= 0 else "D"
                fh.write(f":61:{day:%y%m%d}{day:%m%d}{mark}{str(abs(amount)).replace('.', ',')}NTRFNONREF//{ref}\r\n"
                         f":86:166?00GUTSCHRIFT?20SVWZ+{purpose}?30COBADEFFXXX?31{iban}?32{name}\r\n")
            fh.write(":62F:C240101EUR0,00\r\n-\r\n")


_ROWS: list = []  # the rows of this run, shared by the writers that need slices

def write_onec(path: Path, n: int) -> None:
    own = "40702810900000012345"
    with path.open("w", encoding="cp1251", newline="") as fh:
        fh.write(f"1CClientBankExchange\r\nВерсияФормата=1.03\r\nКодировка=Windows\r\nРасчСчет={own}\r\n")
        for day, amount, name, _iban, purpose, ref in rows(n):
            payer, payee = ("40702810400000067890", own) if amount >= 0 else (own, "40702810400000067890")
            date_key = "ДатаПоступило" if amount >= 0 else "ДатаСписано"
            fh.write(f"СекцияДокумент=Платежное поручение\r\nНомер={ref}\r\nДата={day:%d.%m.%Y}\r\n"
                     f"Сумма={abs(amount)}\r\nПлательщикСчет={payer}\r\nПлательщик1=ООО {name}\r\n"
                     f"ПлательщикИНН=7707083893\r\nПолучательСчет={payee}\r\nПолучатель1=ООО Получатель\r\n"
                     f"{date_key}={day:%d.%m.%Y}\r\nНазначениеПлатежа={purpose}\r\nКонецДокумента\r\n")
        fh.write("КонецФайла\r\n")


def write_crm(path: Path, n: int) -> None:
    """A canonical CRM invoices dump as bench/pipeline.py writes it (plus a free-text note as an extra column)."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("invoice_id,client_id,issue_date,due_date,amount,currency,cost,status,note\n")
        for i, (day, amount, name, _iban, purpose, _ref) in enumerate(rows(n)):
            note = f'"{name}, {purpose}"' if i % 10 == 0 else ""
            fh.write(f"I{i:010d},C{int(name.split()[1]):06d},{day},{day + dt.timedelta(days=30)},{abs(amount)},EUR,"
                     f"{abs(amount) * 7 // 10},{'won' if i % 7 else 'open'},{note}\n")


WRITERS = {"bank_csv": ("generic.csv", write_generic), "sparkasse_csv": ("sparkasse.csv", write_sparkasse),
           "camt": ("camt053.xml", write_camt), "camt_reference": ("camt053.xml", write_camt),
           "mt940": ("mt940.sta", write_mt940),
           "mt940_reference": ("mt940.sta", write_mt940), "1c": ("1c.txt", write_onec),
           "1c_reference": ("1c.txt", write_onec), "crm_csv": ("crm_invoices.csv", write_crm),
           "crm_csv_reference": ("crm_invoices.csv", write_crm)}


def measure(path: Path, scratch: Path, *, bulk: bool, threads: int) -> tuple[int, float, float, float]:
    """(records, parse seconds, load seconds, load CPU seconds). For a set-based path (bank CSV, 1C, CRM CSV, MT940, camt)
    parse and load are the same: parsing happens inside DuckDB/polars while loading."""
    kind = "crm" if path.name.startswith("crm") else "bank"
    reader = registry.detect(path, kind)
    bulk = bulk and hasattr(reader, "load_bulk")
    db = scratch / f"{path.stem}.duckdb"
    stats = FileStats(path=path.name, sha256=path.name, reader=reader.NAME)
    start, cpu = time.perf_counter(), time.process_time()
    with connect(db) as con:
        con.execute(f"SET threads = {int(threads)}")
        if bulk:
            ingest_bulk(con, lambda c: reader.load_bulk(c, path, file_hash=path.name, source_file=path.name,
                                                        run_id="bench", scratch=scratch),
                        stats=stats, kind=kind, size_bytes=path.stat().st_size, run_id="bench")
        else:
            ingest_records(con, reader.read(path), stats=stats, kind=kind, size_bytes=path.stat().st_size,
                           run_id="bench")
    load_s, load_cpu = time.perf_counter() - start, time.process_time() - cpu
    if bulk:
        return stats.records_in, load_s, load_s, load_cpu
    start = time.perf_counter()
    count = sum(1 for r in reader.read(path) if type(r).__name__ in ("BankTxn", "CrmRow", "Rejected"))
    return count, time.perf_counter() - start, load_s, load_cpu


def reference(path: Path, threads: int | None = None) -> tuple[int, float]:
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    start = time.perf_counter()
    (count,), = con.execute("SELECT count(*) FROM (SELECT account, booking_date::DATE, amount::DECIMAL(23,5), "
                            "counterparty_name FROM read_csv(?, header=true, all_varchar=true))",
                            [str(path)]).fetchall()
    return count, time.perf_counter() - start


_CEILING = """
    INSERT INTO raw.bank_transaction BY NAME
    SELECT 'reference' AS file_hash, 'reference.csv' AS source_file, row_number() OVER ()::INTEGER AS record_number,
           'bench' AS reader, account AS own_account, booking_date::DATE AS booking_date,
           value_date::DATE AS value_date, amount::DECIMAL(23, 5) AS amount, currency, counterparty_name,
           counterparty_account, purpose, reference AS bank_reference, 'BOOK' AS status, false AS is_reversal
    FROM read_csv($path, header=true, all_varchar=true)"""


def ceiling(path: Path, scratch: Path) -> tuple[int, float, float]:
    """(rows, seconds, CPU seconds) of DuckDB alone loading the reference rows into the warehouse's raw table on
    one thread: ``read_csv`` typed straight into ``raw.bank_transaction`` (no Python between) and committed.
    Bank CSV is parsed by that same ``read_csv``, so no bank CSV load (parse + load) can be faster on this
    machine; every other reader ends in the same insert and commit after parsing in Python/polars."""
    with connect(scratch / "ceiling.duckdb") as con:
        con.execute("SET threads = 1")
        start, cpu = time.perf_counter(), time.process_time()
        con.execute("BEGIN TRANSACTION")
        con.execute(_CEILING, {"path": str(path)})
        con.execute("COMMIT")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        (count,), = con.execute("SELECT count(*) FROM raw.bank_transaction").fetchall()
    return count, seconds, cpu


def one(name: str, records: int, threads: int) -> None:
    """Measure one format in this (fresh) process and print a JSON line, peak memory included."""
    import json
    import resource

    filename, writer = WRITERS[name]
    path = OUT / filename
    _ROWS[:] = list(rows(records))
    writer(path, records)
    _ROWS.clear()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as scratch:
        count, parse_s, load_s, load_cpu = measure(path, Path(scratch), bulk=not name.endswith("_reference"),
                                                   threads=threads)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"format": name, "records": count, "parse_s": parse_s, "load_s": load_s, "load_cpu": load_cpu,
                      "file_mb": path.stat().st_size / 1e6, "peak_rss_mb": peak / 1024,
                      "rss_before_mb": before / 1024}))


def main() -> None:
    import json
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--formats", default=",".join(WRITERS))
    parser.add_argument("--threads", type=int, default=1, help="polars and DuckDB threads per reader (default 1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.one:
        one(args.one, args.records, args.threads)
        return
    ref_path = OUT / "reference.csv"
    write_generic(ref_path, args.records)
    ref_count, ref_s = reference(ref_path)
    ref_rate = ref_count / ref_s
    _, ref1_s = reference(ref_path, threads=1)
    ref1_rate = ref_count / ref1_s
    print(f"machine: {os.cpu_count()} cores; records per format: {args.records}; readers on {args.threads} thread(s)")
    print(f"reference: DuckDB read_csv (typed) {ref_count} rows in {ref_s:.2f} s = {ref_rate:,.0f} rows/s "
          f"(all cores); {ref1_rate:,.0f} rows/s on one thread")
    with tempfile.TemporaryDirectory() as scratch:
        ceil_count, ceil_s, ceil_cpu = ceiling(ref_path, Path(scratch))
    print(f"ceiling: DuckDB alone loading those rows into raw.bank_transaction (read_csv -> INSERT -> COMMIT, one "
          f"thread) {ceil_count / ceil_s:,.0f} rows/s, {ceil_count / ceil_cpu:,.0f} per CPU-second: the bound of a CSV "
          f"load here; every other reader pays the same insert and commit after its own parsing")
    print(f"{'format':14} {'records':>9} {'file MB':>8} {'parse rec/s':>12} {'load rec/s':>11} {'cpu rec/s':>10} "
          f"{'vs DuckDB':>10} {'vs 1 thr':>9} {'peak RSS MB':>12} {'RSS growth':>11} {'target':>10}  met")
    env = {**os.environ, "POLARS_MAX_THREADS": str(args.threads)}
    for name in args.formats.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", name, "--records", str(args.records),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True, env=env)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rate, load_rate, cpu_rate = r["records"] / r["parse_s"], r["records"] / r["load_s"], r["records"] / r["load_cpu"]
        print(f"{name:14} {r['records']:>9} {r['file_mb']:>8.1f} {rate:>12,.0f} {load_rate:>11,.0f} {cpu_rate:>10,.0f} "
              f"{rate / ref_rate:>9.3f}x {rate / ref1_rate:>8.3f}x {r['peak_rss_mb']:>12,.0f} "
              f"{r['peak_rss_mb'] - r['rss_before_mb']:>11,.0f} {f'{TARGETS[name]:,}' if TARGETS[name] else '-':>10}  "
              f"{'-' if not TARGETS[name] else 'yes' if rate >= TARGETS[name] else 'NO'}")


if __name__ == "__main__":
    main()
