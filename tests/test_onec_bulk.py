"""The set-based path for 1C (sources/onec_bulk.py) gives exactly what the reference reader gives, row for row:
raw rows (every column), quarantine rows (record, line, reason, raw text), statement balances and file errors."""

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pytest

from clientbase.errors import ParseError
from sources import columnar, onec, onec_bulk
from tests import parity
from warehouse.db import connect

FIXTURES = Path(__file__).parent / "fixtures" / "bank"
OWN_RUB, OWN_USD, OWN_ODD = "40702810900000012345", "40702840500000001234", "40702999000000000001"
OTHER = ("40702810400000067890", "40101810400000010001", "30101810400000000225")


def load(tmp_path: Path, path: Path, mode: str):
    return parity.load(onec, tmp_path, path, mode)


def both(tmp_path: Path, path: Path):
    return parity.both(onec, tmp_path, path)


def error_of(call) -> str:
    with pytest.raises(ParseError) as info:
        call()
    return str(info.value)


def assert_same_error(tmp_path: Path, path: Path, match: str) -> None:
    expected = error_of(lambda: list(onec.read(path)))
    with connect(tmp_path / "bulk.duckdb") as con:
        got = error_of(lambda: onec.load_bulk(con, path, file_hash="h", source_file=path.name, run_id="r",
                                              scratch=tmp_path))
    assert got == expected
    assert match in got


@pytest.mark.parametrize("name", ["1c_sberbank_cp1251.txt", "1c_dos_cp866.txt"])
def test_fixtures_equal_reference(tmp_path, name):
    ref = both(tmp_path, FIXTURES / name)
    assert ref["stats"][:3] == (4, 3, 1)
    amounts = [(r["record_number"], r["amount"], r["counterparty_tax_id"]) for r in ref["rows"]]
    assert amounts == [(1, Decimal("125000.00000"), "7707083893"), (2, Decimal("-30000.00000"), "7842000011"),
                       (3, Decimal("-500.50000"), None)]
    assert ref["quarantine"][0]["reason"] == "amount '12.5O' is not a number"
    (balance,) = ref["balances"]
    assert (balance["record_number"], balance["entries_total"]) == (5, Decimal("94499.50000"))


def test_truncated_fixture_is_the_same_error(tmp_path):
    assert_same_error(tmp_path, FIXTURES / "1c_truncated.txt", "ends without КонецФайла: it is truncated")


# ---- generated awkward files ------------------------------------------------------------------------------

def _case(rng: random.Random, key: str) -> str:
    return rng.choice([key, key.lower(), key.upper(), key[0].lower() + key[1:]])


def _document(rng: random.Random, n: int, day: dt.date) -> list[str]:
    kind = rng.choices(["in", "out", "internal", "foreign", "usd", "odd_currency"], [40, 35, 5, 5, 10, 5])[0]
    own = {"usd": OWN_USD, "odd_currency": OWN_ODD}.get(kind, OWN_RUB)
    other = rng.choice(OTHER)
    payer, payee = {"in": (other, own), "out": (own, other), "internal": (OWN_RUB, OWN_USD),
                    "foreign": (other, OTHER[0])}.get(kind, (own, other) if rng.random() < 0.5 else (other, own))
    amount = rng.choices(
        [f"{rng.randint(0, 10**7)}.{rng.randint(0, 99):02d}", f"{rng.randint(1, 9999)},{rng.randint(0, 9)}",
         str(rng.randint(1, 10**6)), "12.5O", "1 000.00", "1e3", "1.123456", "", "+5.00", "7.", "123456789012345678.5"],
        [50, 10, 10, 3, 3, 2, 2, 2, 2, 2, 1])[0]
    date = rng.choices([f"{day:%d.%m.%Y}", "31.02.2025", f"{day.day}.{day.month}.{day.year}", "", "2025-03-01"],
                       [85, 4, 4, 4, 3])[0]
    name = rng.choice(['ООО "Ромашка"', "ИНН 7707083893 ООО  Ромашка", "инн7707083893\tИП Петров", "АО\u00a0Банк",
                       "Smith & Co", "", "ИНН 123 ООО Коротко"])
    lines = [(_case(rng, "СекцияДокумент"), rng.choice(["Платежное поручение", "Банковский ордер"])),
             ("Номер", str(n)), (_case(rng, "Дата"), date), (_case(rng, "Сумма"), amount),
             (_case(rng, rng.choice(["ПлательщикСчет", "ПлательщикРасчСчет"])), payer),
             (_case(rng, "ПолучательСчет"), payee)]
    if rng.random() < 0.7:
        lines.append((_case(rng, "Плательщик1"), name))
    else:
        lines.append((_case(rng, "Плательщик"), name))
    lines.append((_case(rng, "Получатель"), rng.choice(["ИНН 7842000011 УФК", "ПАО Банк", ""])))
    lines.append((_case(rng, "ПлательщикИНН"), rng.choice(["7707083893", "", "500100732259"])))
    lines.append(("ПолучательБИК", rng.choice(["044525225", ""])))
    lines.append(("ДатаСписано", rng.choice([f"{day:%d.%m.%Y}", "", "", "32.01.2025"])))
    lines.append(("ДатаПоступило", rng.choice([f"{day:%d.%m.%Y}", "", f"{day + dt.timedelta(days=1):%d.%m.%Y}"])))
    lines.append((_case(rng, "НазначениеПлатежа"), rng.choice(
        ["Оплата по счету № 15", "  Оплата   с  пробелами ", "Налог\x1cза 1 кв.", "", "Комиссия"])))
    if rng.random() < 0.1:
        lines.append(("НазначениеПлатежа2", rng.choice(["продолжение", ""])))
    if rng.random() < 0.05:
        lines.append(("Сумма", "999.99"))  # a second value of a key: the first wins
    head, rest = lines[0], lines[1:]
    rng.shuffle(rest)
    text = [f"{k}={v}" for k, v in [head, *rest]]
    if rng.random() < 0.05:
        text.insert(rng.randint(1, len(text)), "строка без знака равенства")
    if rng.random() < 0.05:
        text.insert(rng.randint(1, len(text)), "")
    if rng.random() < 0.05:
        text[rng.randint(1, len(text) - 1)] = " \t" + text[-1] + " \u00a0"
    return [*text, _case(rng, "КонецДокумента")]


def _section(account: str, start: str, end: str, opening: str, closing: str) -> list[str]:
    return ["СекцияРасчСчет", f"ДатаНачала={start}", f"ДатаКонца={end}", f"РасчСчет={account}",
            f"НачальныйОстаток={opening}", f"КонечныйОстаток={closing}", "КонецРасчСчет"]


def generated(seed: int, documents: int = 300) -> list[str]:
    rng = random.Random(seed)
    lines = ["1CClientBankExchange", "ВерсияФормата=1.03", "РасчСчет=" + OWN_RUB, "расчсчет=" + OWN_ODD,
             "ДатаНачала=01.03.2025", *_section(OWN_RUB, "01.03.2025", "20.03.2025", "100000.00", "1,00")]
    day = dt.date(2025, 3, 1)
    for n in range(documents):
        if n == documents // 3:  # a section after some documents: it only sums what follows it
            lines += _section(OWN_USD, "", "31.03.2025", "", "0")
        if n == documents // 2:
            lines += ["КонецДокумента"]  # a closer alone: an empty document, quarantined
        lines += _document(rng, n, day + dt.timedelta(days=n % 40))
    return [*lines, "КонецФайла"]


def write(path: Path, lines: list[str], encoding: str, newline: str = "\r\n", declared: str | None = None) -> Path:
    declared = declared or {"cp1251": "Windows", "cp866": "DOS", "utf-8": "UTF-8"}[encoding]
    head = "\r\n".join([lines[0], f"Кодировка={declared}", lines[1]]) + "\r\n"  # the reference finds Кодировка
    path.write_bytes((head + newline.join(lines[2:]) + newline).encode(encoding))  # in \r\n or \n lines only
    return path


@pytest.mark.parametrize(("seed", "encoding", "newline", "chunk", "block"), [
    (1, "cp1251", "\r\n", 4096, 1 << 18), (2, "cp866", "\n", 1 << 20, 1 << 18), (3, "utf-8", "\r\n", 1000, 1 << 18),
    (4, "utf-8", "\r", 2048, 1 << 18), (5, "cp1251", "\n", 700, 1 << 18),
    (6, "utf-8", "\r\n", 4096, 7), (7, "cp1251", "\r\n", 4096, 5)])  # blocks that cut lines and characters
def test_generated_files_equal_reference(tmp_path, monkeypatch, seed, encoding, newline, chunk, block):
    monkeypatch.setattr(onec_bulk, "CHUNK_BYTES", chunk)  # many chunks: documents cut at chunk ends carry over
    monkeypatch.setattr(columnar, "TRANSCODE_BLOCK", block)
    path = write(tmp_path / f"gen{seed}.txt", generated(seed), encoding, newline)
    ref = both(tmp_path, path)
    assert ref["stats"][3] == encoding
    assert len(ref["rows"]) > 150 and len(ref["quarantine"]) > 15
    reasons = {q["reason"] for q in ref["quarantine"]}
    for expected in ("amount '12.5O' is not a number", "date '31.02.2025' does not match the format '%d.%m.%Y'",
                     "document has no Сумма", "is one of the file's own accounts",
                     "currency code 999 (digits 6-8) is not one this reader knows"):
        assert any(expected in r for r in reasons), expected
    assert {r["currency"] for r in ref["rows"]} == {"RUB", "USD"}
    assert any(r["amount"] < 0 for r in ref["rows"]) and any(r["amount"] > 0 for r in ref["rows"])
    assert [b["own_account"] for b in ref["balances"]] == [OWN_RUB, OWN_USD]


@pytest.mark.parametrize("encoding", ["utf-8", "cp1251"])
def test_whitespace_at_value_edges_is_stripped_as_the_reference_does(tmp_path, encoding):
    """Every whitespace character of Python's set (that the encoding has) at either end of names, purposes, INNs,
    accounts, amounts and dates, beside Cyrillic and Latin endings, comes out as the reference strips it. Half the
    documents have a plain amount and date, so the fast path types them itself rather than the reference code."""
    spaces = [c for c in onec_bulk.PY_SPACE if c not in "\r\n"]
    if encoding == "cp1251":
        spaces = [c for c in spaces if c.encode("cp1251", errors="ignore")]
    ends = ["ООО Восход т", "ПАО Р", "ИП Я", "ООО Пух", "ООО Ромашка", "Smith & Co"]
    lines = ["1CClientBankExchange", "ВерсияФормата=1.03", "РасчСчет=" + OWN_RUB]
    for n, space in enumerate(spaces * 2):
        name, around = ends[n % len(ends)], (space, "") if n % 3 == 0 else ("", space) if n % 3 == 1 else (space, space)
        pad = around[0] + "{}" + around[1]
        plain = "{}" if n % 2 else pad  # a plain amount and date: the fast path types the document itself
        lines += ["СекцияДокумент=Платежное поручение", f"Номер={n}", "Дата=" + plain.format("03.03.2025"),
                  "Сумма=" + plain.format(f"{n + 1}.50"), "ПлательщикСчет=" + pad.format(OTHER[0]),
                  "Плательщик1=" + pad.format(name), "ПлательщикИНН=" + pad.format("7707083893"),
                  "ПолучательСчет=" + OWN_RUB, "Получатель1=" + pad.format(ends[(n + 1) % len(ends)]),
                  "ДатаПоступило=03.03.2025", "НазначениеПлатежа=" + pad.format(f"Оплата {name}"), "КонецДокумента"]
    ref = both(tmp_path, write(tmp_path / "edges.txt", [*lines, "КонецФайла"], encoding))
    assert len(ref["rows"]) == 2 * len(spaces) and not ref["quarantine"]
    assert {r["counterparty_name"] for r in ref["rows"]} == set(ends)
    assert {r["counterparty_tax_id"] for r in ref["rows"]} == {"7707083893"}
    assert {r["counterparty_account"] for r in ref["rows"]} == {OTHER[0]}


@pytest.mark.parametrize("known", [0, 5, 1024])
def test_key_spellings_beyond_the_enum_are_coded_the_same(tmp_path, monkeypatch, known):
    """Spellings first seen in later chunks, and more of them than the Enum keeps, are still the reference's keys."""
    monkeypatch.setattr(onec_bulk, "CHUNK_BYTES", 1200)
    monkeypatch.setattr(onec_bulk, "_KNOWN_SPELLINGS", known)
    lines = ["1CClientBankExchange", "РасчСчет=" + OWN_RUB]
    for n in range(40):
        amount, payee = ("Сумма", "ПолучательСчет") if n % 3 else ("сУММА ", "получательсчет")
        lines += [f"Свободный текст {n}", "СекцияДокумент=Платежное поручение", f"Дата=0{n % 9 + 1}.03.2025",
                  f"{amount}={n}.5", f"ПлательщикСчет={OTHER[n % 3]}", f"{payee}={OWN_RUB}", "КонецДокумента"]
    ref = both(tmp_path, write(tmp_path / "spellings.txt", [*lines, "КонецФайла"], "cp1251"))
    assert [r["amount"] for r in ref["rows"]] == [Decimal(f"{n}.5") for n in range(40)]


def test_internal_transfer_gives_two_rows_and_balances_sum_them(tmp_path):
    lines = ["1CClientBankExchange", *_section(OWN_RUB, "01.03.2025", "31.03.2025", "10.00", "5.00"),
             *_section(OWN_USD, "01.03.2025", "31.03.2025", "0", "5"),
             "СекцияДокумент=Платежное поручение", "Дата=05.03.2025", "Сумма=5,00", f"ПлательщикСчет={OWN_RUB}",
             f"ПолучательСчет={OWN_USD}", "Плательщик=ИНН 7707083893 ООО  Ромашка", "Получатель1=АО Банк",
             "ДатаПоступило=06.03.2025", "НазначениеПлатежа=Перевод", "НазначениеПлатежа2=между счетами",
             "КонецДокумента", "СекцияДокумент=Платежное поручение", "Дата=07.03.2025", "Сумма=1.50",
             f"ПлательщикСчет={OWN_RUB}", "ПолучательСчет=40702810400000067890", "КонецДокумента", "КонецФайла"]
    ref = both(tmp_path, write(tmp_path / "internal.txt", lines, "utf-8"))
    rows = [(r["record_number"], r["own_account"], r["amount"], r["booking_date"], r["counterparty_name"],
             r["purpose"], r["source_line"]) for r in ref["rows"]]
    assert rows == [
        (1, OWN_RUB, Decimal("-5"), dt.date(2025, 3, 5), "АО Банк", "Перевод между счетами", 17),
        (2, OWN_USD, Decimal("5"), dt.date(2025, 3, 6), "ООО Ромашка", "Перевод между счетами", 17),
        (3, OWN_RUB, Decimal("-1.5"), dt.date(2025, 3, 7), None, None, 28)]
    assert [(b["record_number"], b["entries_total"]) for b in ref["balances"]] == [
        (4, Decimal("-6.5")), (5, Decimal("5"))]


def test_only_unusual_documents_go_through_the_reference_code(tmp_path, monkeypatch):
    calls = []
    original = onec.document
    monkeypatch.setattr(onec, "document", lambda *a: calls.append(a) or original(*a))
    lines = ["1CClientBankExchange", "РасчСчет=" + OWN_RUB]
    for n in range(50):
        lines += ["СекцияДокумент=Платежное поручение", f"Дата=0{n % 9 + 1}.03.2025", f"Сумма={n}.5",
                  f"ПлательщикСчет={OTHER[n % 3]}", f"ПолучательСчет={OWN_RUB}", f"Плательщик1=ООО {n}",
                  "КонецДокумента"]
    lines += ["СекцияДокумент=Платежное поручение", "Дата=01.03.2025", "Сумма=1 000.00",  # spaces: unusual
              f"ПлательщикСчет={OWN_RUB}", f"ПолучательСчет={OTHER[0]}", "КонецДокумента", "КонецФайла"]
    ref = both(tmp_path, write(tmp_path / "plain.txt", lines, "cp1251"))
    calls.clear()
    path = tmp_path / "plain.txt"
    with connect(tmp_path / "again.duckdb") as con:
        result = onec.load_bulk(con, path, file_hash="h", source_file=path.name, run_id="r", scratch=tmp_path)
    assert (result.loaded, result.quarantined) == (51, 0)
    assert [c[0]["сумма"] for c in calls] == ["1 000.00"]
    assert ref["rows"][-1]["amount"] == Decimal("-1000")


# ---- file-level errors: the same message, from the same line ------------------------------------------------

def test_mangled_file_is_the_same_error(tmp_path):
    text = (FIXTURES / "1c_sberbank_cp1251.txt").read_bytes().decode("cp1251")
    path = tmp_path / "mangled.txt"
    path.write_text(text.replace("Ромашка", "\ufffd\ufffd\ufffd"), encoding="utf-8")
    assert_same_error(tmp_path, path, "U+FFFD replacement characters")


def test_declared_encoding_mismatch_is_the_same_error(tmp_path):
    text = (FIXTURES / "1c_sberbank_cp1251.txt").read_bytes().decode("cp1251")
    path = tmp_path / "lies.txt"
    path.write_bytes(text.encode("cp866").replace("Кодировка=DOS".encode("cp866"),
                                                  "Кодировка=Windows".encode("cp866")))
    assert_same_error(tmp_path, path, "declares cp1251")


def test_unknown_declared_encoding_is_the_same_error(tmp_path):
    path = write(tmp_path / "koi.txt", generated(8, 5), "utf-8", declared="KOI8-R")
    assert_same_error(tmp_path, path, "unknown Кодировка='KOI8-R'")


@pytest.mark.parametrize(("encoding", "bad", "reason"), [
    ("cp1251", 0x98, "character maps to <undefined>"), ("utf-8", 0xFF, "invalid start byte")])
def test_bad_bytes_after_the_sampled_head_are_the_same_error(tmp_path, monkeypatch, encoding, bad, reason):
    monkeypatch.setattr(onec_bulk, "CHUNK_BYTES", 1 << 16)
    path = tmp_path / "bad.txt"
    data = bytearray(write(path, generated(9, documents=5000), encoding).read_bytes())
    assert len(data) > 1.3 * (1 << 20)  # beyond the 1 MiB onec.encoding_of checks
    data[data.index("КонецДокумента".encode(encoding), len(data) * 3 // 4)] = bad
    path.write_bytes(bytes(data))
    assert_same_error(tmp_path, path, f"not valid {encoding} ({reason}) although the header declares it")


@pytest.mark.parametrize(("change", "match"), [
    (lambda ls: ls[:-1], "ends without КонецФайла"),
    (lambda ls: [*ls, "Сумма=1.00"], "content after КонецФайла"),
    (lambda ls: [*ls[:40], "НазначениеПлатежа=" + "я" * 10_001, *ls[40:]], "is longer than 10000 characters"),
    (lambda ls: [*ls[:40], "x" * 9_999, *ls[40:]], "is longer than 10000 characters"),  # 9999 + CRLF
    (lambda ls: ["1CClientBankExchangeX", *ls[1:]], "the first line must be 1CClientBankExchange"),
    (lambda ls: [*ls[:-1], "СекцияРасчСчет", "ДатаНачала=01.03.2025", "КонецРасчСчет", ls[-1]],
     "has no РасчСчет"),
    (lambda ls: [*ls[:-1], "СекцияРасчСчет", "РасчСчет=" + OWN_RUB, "НачальныйОстаток=abc", "КонецРасчСчет",
                 ls[-1]], "amount 'abc' is not a number"),
    (lambda ls: [*ls[:-1], "СекцияРасчСчет", "РасчСчет=KZ86125KZT5004100100", "КонецРасчСчет", ls[-1]],
     "not a 20-digit account number"),
    (lambda ls: [*ls[:40], "СекцияДокумент=Платежное поручение", *ls[40:]],
     "a section starts before the one opened at line"),  # an unclosed document is never dropped silently
    (lambda ls: [*ls[:30], "x" * 10_001, *ls[30:-1], "КонецФайла", "СекцияРасчСчет"],
     "is longer than 10000 characters"),  # the first error in the file wins
])
def test_file_errors_are_the_same(tmp_path, monkeypatch, change, match):
    monkeypatch.setattr(onec_bulk, "CHUNK_BYTES", 1500)
    path = write(tmp_path / "broken.txt", change(generated(10, 40)), "cp1251")
    assert_same_error(tmp_path, path, match)


def test_exactly_the_longest_line_is_accepted(tmp_path):
    lines = generated(11, 10)
    lines.insert(20, "x" * (onec.MAX_LINE_CHARS - 2))  # + CRLF = the limit
    both(tmp_path, write(tmp_path / "long.txt", lines, "utf-8"))


def test_bom_blank_first_line_and_no_final_newline(tmp_path):
    lines = generated(12, 30)
    path = tmp_path / "bom.txt"
    body = "\r\n".join([lines[0], "Кодировка=UTF-8", *lines[1:]])
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))  # no newline after КонецФайла
    ref = both(tmp_path, path)
    assert len(ref["rows"]) > 10


def outcome(tmp_path: Path, path: Path, mode: str):
    try:
        return load(tmp_path, path, mode)
    except ParseError as exc:
        return str(exc)


@pytest.mark.parametrize("seed", range(6))
def test_broken_structure_equals_reference(tmp_path, monkeypatch, seed):
    """Lines dropped, repeated, moved or added at random (closers without openers, openers twice, sections in
    documents, КонецФайла early): both paths give the same rows or the same error."""
    monkeypatch.setattr(onec_bulk, "CHUNK_BYTES", 900)
    rng = random.Random(seed)
    base = generated(100 + seed, 30)
    markers = ["СекцияДокумент=Платежное поручение", "КонецДокумента", "СекцияРасчСчет", "КонецРасчСчет",
               "КонецФайла", "РасчСчет=" + OWN_USD, "Сумма=1.00", "ПлательщикСчет=" + OWN_RUB, "",
               "\ufeffДата=01.03.2025"]
    for attempt in range(8):
        lines = list(base)
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(2, len(lines) - 2)
            action = rng.choice(["drop", "repeat", "move", "add"])
            if action == "drop":
                del lines[at]
            elif action == "repeat":
                lines.insert(at, lines[at])
            elif action == "move":
                lines.insert(rng.randint(2, len(lines) - 2), lines.pop(at))
            else:
                lines.insert(at, rng.choice(markers))
        encoding = "utf-8" if any("\ufeff" in line for line in lines) else rng.choice(["cp1251", "utf-8"])
        path = write(tmp_path / f"broken{attempt}.txt", lines, encoding)
        reference, bulk = outcome(tmp_path / "r", path, "reference"), outcome(tmp_path / "b", path, "bulk")
        assert bulk == reference, (attempt, lines)
        for folder in ("r", "b"):
            for db in (tmp_path / folder).glob("*.duckdb"):
                db.unlink()
