"""A realistic, seeded synthetic B2B company: CRM dump plus bank statements in two real formats.

- ~300 clients over 36 months; revenue is Pareto-like (a few whales, a long tail);
- buying patterns: steady, seasonal and erratic buyers; acquisition over time, churn, and win-back;
- loss-makers: demanding clients (many tickets and calls), late payers, and bad debt (invoices never paid);
- a CRM with managers in three departments, activities with durations, tickets, invoices with due dates and
  cost, referrals, flags and satisfaction;
- the bank side: account 1 as monthly ISO 20022 camt.053 (.001.02 for older months, .001.08 for the last 12,
  where party names move under ``Pty``), account 2 as a German savings bank CSV-CAMT export (cp1252, ``;``,
  decimal comma); plus salaries, taxes, supplier payments, bank fees, own-account transfers, refunds,
  pending entries and a few payers who are not in the CRM.

Everything is drawn from one ``numpy.random.Generator(seed)``: the same seed gives byte-identical files.
``scale`` targets a number of bank transactions (millions for benchmarks); files are written month by month,
so memory stays flat.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

OUR_NAME = "Nordlicht Industrial Supply GmbH"
OUR_IBAN_1 = "DE89370400440532013000"
OUR_IBAN_2 = "DE02120300000000202051"
OUR_BIC_1 = "COBADEFFXXX"
CURRENCY = "EUR"
DEPARTMENTS = ("Key Accounts", "SMB Sales", "Customer Success")
INDUSTRIES = ("transport", "construction", "retail", "manufacturing", "it", "healthcare", "agriculture")
REGIONS = ("DE-North", "DE-South", "AT", "NL", "PL", "LT")
CHANNELS = ("referral", "trade fair", "website", "cold call", "partner")
SIZE_BANDS = ("1-9", "10-49", "50-249", "250+")
LEGAL = ("GmbH", "AG", "KG", "GmbH & Co. KG", "B.V.", "Sp. z o.o.", "UAB", "e.K.")
WORDS = ("Alpen", "Baltic", "Rhein", "Nord", "Sued", "Falken", "Eichen", "Linden", "Stahl", "Kraft", "Blau",
         "Gruen", "Hansa", "Elbe", "Weser", "Donau", "Bergmann", "Schmidt", "Vogel", "Adler", "Kessler", "Meyer",
         "Orion", "Polaris", "Vega", "Atlas", "Kappa", "Sigma", "Delta", "Omega")
TRADES = ("Logistik", "Bau", "Handel", "Technik", "Metall", "Transport", "Systeme", "Medizintechnik", "Agrar",
          "Software", "Spedition", "Maschinenbau")


@dataclass(frozen=True)
class DemoSpec:
    clients: int = 300
    months: int = 36
    end: dt.date = dt.date(2026, 10, 31)  # last day of the last month
    seed: int = 42
    scale: int | None = None  # target bank transactions; sets the client count

    def __post_init__(self) -> None:
        if self.months < 6 or self.clients < 10:
            raise ValueError("the demo needs at least 6 months and 10 clients")

    def client_count(self) -> int:
        if self.scale is None:
            return self.clients
        # measured: about 0.41 bank transactions per client-month (payments, refunds, overheads)
        return max(self.clients, int(self.scale / (self.months * 0.41)))


@dataclass
class DemoSummary:
    inbox: Path
    clients: int
    months: int
    bank_transactions: int = 0
    files: list[str] = field(default_factory=list)
    first_day: dt.date | None = None
    last_day: dt.date | None = None


def _month_starts(spec: DemoSpec) -> list[dt.date]:
    last = spec.end.replace(day=1)
    out = []
    y, m = last.year, last.month
    for _ in range(spec.months):
        out.append(dt.date(y, m, 1))
        m -= 1
        if m == 0:
            y, m = y - 1, 12
    return out[::-1]


def _days_in_month(d: dt.date) -> int:
    nxt = dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    return (nxt - d).days


def _iban(rng: np.random.Generator, country: str = "DE") -> str:
    bban = "".join(str(x) for x in rng.integers(0, 10, 18))
    # ISO 13616 check digits
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def _vat(rng: np.random.Generator) -> str:
    # German USt-IdNr with a valid ISO 7064 MOD 11,10 check digit
    digits = [int(x) for x in rng.integers(0, 10, 8)]
    digits[0] = digits[0] or 1
    product = 10
    for d in digits:
        total = (d + product) % 10 or 10
        product = (2 * total) % 11
    check = (11 - product) % 10
    return "DE" + "".join(map(str, digits)) + str(check)


def _money(x: float) -> Decimal:
    return Decimal(f"{x:.2f}")


class _Clients:
    """Client attributes as numpy arrays (vectorised, so scale mode stays fast)."""

    def __init__(self, rng: np.random.Generator, n: int, months: int):
        self.n = n
        idx = np.arange(n)
        self.ids = np.array([f"C{i + 1:06d}" for i in idx])
        # Pareto-like size: monthly spend of a steady month, EUR
        self.base = np.minimum(np.round(450 * (rng.pareto(1.25, n) + 1) ** 1.35, 2), 250_000.0)
        self.pattern = rng.choice(np.array(["steady", "seasonal", "erratic"]), n, p=[0.45, 0.25, 0.30])
        self.start = np.where(rng.random(n) < 0.55, 0, rng.integers(1, months - 2, n))  # first active month
        churns = rng.random(n) < 0.28
        self.churn = np.where(churns, np.minimum(self.start + rng.integers(4, months, n), months), months)
        winback = churns & (rng.random(n) < 0.3)
        self.back = np.where(winback, self.churn + rng.integers(3, 9, n), months + 99)  # return month
        self.late_days = np.where(rng.random(n) < 0.12, rng.integers(45, 130, n), rng.integers(-5, 12, n))
        self.bad_debt = rng.random(n) < 0.05
        self.demanding = rng.random(n) < 0.08
        self.margin = np.round(rng.uniform(0.18, 0.45, n), 3)
        self.phase = rng.integers(0, 12, n)
        self.names = np.array([
            f"{WORDS[a]} {TRADES[b]} {LEGAL[c]}" + (f" {i + 1}" if i >= len(WORDS) * len(TRADES) else "")
            for i, (a, b, c) in enumerate(zip(rng.integers(0, len(WORDS), n), rng.integers(0, len(TRADES), n),
                                              rng.integers(0, len(LEGAL), n), strict=True))
        ])
        self.ibans = np.array([_iban(rng) for _ in idx])
        self.vat = np.array([_vat(rng) if r < 0.6 else "" for r in rng.random(n)])
        self.pays_to_csv = rng.random(n) < 0.3  # which of our accounts the client pays into
        self.manager = rng.integers(0, 12, n)

    def active(self, month: int) -> np.ndarray:
        return ((self.start <= month) & (month < self.churn)) | (month >= self.back)

    def purchase_probability(self, month: int, calendar_month: int) -> np.ndarray:
        p = np.select([self.pattern == "steady", self.pattern == "seasonal"], [0.92, 0.75], 0.35)
        season = 0.5 + 0.5 * np.cos(2 * np.pi * ((calendar_month - 1 - self.phase) % 12) / 12)
        p = np.where(self.pattern == "seasonal", p * (0.15 + 0.85 * season), p)
        return np.where(self.active(month), p, 0.0)

    def amounts(self, rng: np.random.Generator, who: np.ndarray, calendar_month: int) -> np.ndarray:
        base = self.base[who]
        noise = np.select(
            [self.pattern[who] == "steady", self.pattern[who] == "seasonal"],
            [rng.normal(1, 0.06, len(who)), rng.normal(1, 0.15, len(who))],
            rng.lognormal(0, 0.9, len(who)),
        )
        season = 0.5 + 0.5 * np.cos(2 * np.pi * ((calendar_month - 1 - self.phase[who]) % 12) / 12)
        factor = np.where(self.pattern[who] == "seasonal", 0.4 + 1.6 * season, 1.0)
        return np.round(np.maximum(base * noise * factor, 25.0), 2)


def generate(inbox: Path, spec: DemoSpec = DemoSpec()) -> DemoSummary:
    rng = np.random.default_rng(spec.seed)
    months = _month_starts(spec)
    n = spec.client_count()
    clients = _Clients(rng, n, len(months))
    bank_dir, crm_dir = inbox / "bank", inbox / "crm"
    bank_dir.mkdir(parents=True, exist_ok=True)
    crm_dir.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(inbox=inbox, clients=n, months=len(months), first_day=months[0], last_day=spec.end)

    _write_managers(crm_dir / "managers.csv")
    walk_ins = [(f"{WORDS[i]} Einzelhandel e.K.", _iban(rng)) for i in range(5)]
    invoices = open(crm_dir / "invoices.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
    inv = csv.writer(invoices)
    inv.writerow(["invoice_id", "client_id", "issue_date", "due_date", "amount", "currency", "cost", "status"])
    activities = open(crm_dir / "activities.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
    act = csv.writer(activities)
    act.writerow(["activity_id", "client_id", "manager_id", "activity_type", "started_at", "duration_minutes"])
    tickets = open(crm_dir / "tickets.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
    tck = csv.writer(tickets)
    tck.writerow(["ticket_id", "client_id", "opened_at", "closed_at", "minutes_spent", "manager_id"])

    balance1 = Decimal("250000.00")
    invoice_no = activity_no = ticket_no = 0
    carry: dict[int, list[tuple]] = {}  # payments falling into later months: month index -> entries
    for mi, month in enumerate(months):
        days = _days_in_month(month)
        p = clients.purchase_probability(mi, month.month)
        buyers = np.nonzero(rng.random(n) < p)[0]
        amounts = clients.amounts(rng, buyers, month.month)
        issue_day = rng.integers(0, days, len(buyers))
        for who, amount, day in zip(buyers.tolist(), amounts.tolist(), issue_day.tolist(), strict=True):
            invoice_no += 1
            issued = month + dt.timedelta(days=day)
            due = issued + dt.timedelta(days=30)
            unpaid = clients.bad_debt[who] and rng.random() < 0.6
            status = "won"
            inv.writerow([f"INV-{invoice_no:07d}", clients.ids[who], issued.isoformat(), due.isoformat(),
                          f"{amount:.2f}", CURRENCY, f"{amount * (1 - clients.margin[who]):.2f}", status])
            if unpaid:
                continue
            paid = due + dt.timedelta(days=int(clients.late_days[who]) + int(rng.integers(-3, 4)))
            target = (paid.year - months[0].year) * 12 + paid.month - months[0].month
            entry = ("client", who, paid, _money(amount), f"INV-{invoice_no:07d}")
            carry.setdefault(target, []).append(entry)
        # CRM activity and support load (demanding clients cost much more time)
        active = np.nonzero(clients.active(mi))[0]
        calls = rng.poisson(np.where(clients.demanding[active], 6.0, 0.4 + np.log1p(clients.base[active]) / 12))
        for who, count in zip(active.tolist(), calls.tolist(), strict=True):
            for _ in range(count):
                activity_no += 1
                kind = ("call", "meeting", "email", "task")[int(rng.integers(0, 4))]
                minutes = {"call": 15, "meeting": 60, "email": 8, "task": 30}[kind] * float(rng.uniform(0.5, 2.0))
                when = dt.datetime.combine(month, dt.time(8)) + dt.timedelta(days=int(rng.integers(0, days)),
                                                                             minutes=int(rng.integers(0, 540)))
                act.writerow([f"A{activity_no:08d}", clients.ids[who], f"M{clients.manager[who] + 1:02d}", kind,
                              when.isoformat(timespec="minutes"), f"{minutes:.0f}"])
        support = rng.poisson(np.where(clients.demanding[active], 3.0, 0.15))
        for who, count in zip(active.tolist(), support.tolist(), strict=True):
            for _ in range(count):
                ticket_no += 1
                opened = month + dt.timedelta(days=int(rng.integers(0, days)))
                tck.writerow([f"T{ticket_no:07d}", clients.ids[who], opened.isoformat(),
                              (opened + dt.timedelta(days=int(rng.integers(0, 10)))).isoformat(),
                              int(rng.integers(20, 240)), f"M{int(rng.integers(9, 13)):02d}"])
        # the bank: this month's payments plus overheads
        entries = carry.pop(mi, [])
        for name, iban in walk_ins:
            if rng.random() < 0.3:
                entries.append(("walkin", (name, iban), month + dt.timedelta(days=int(rng.integers(0, days))),
                                _money(float(rng.uniform(80, 900))), "Barverkauf"))
        refunders = rng.choice(buyers, size=min(len(buyers), max(1, len(buyers) // 60)), replace=False) \
            if len(buyers) else []
        for who in list(refunders):
            entries.append(("refund", int(who), month + dt.timedelta(days=int(rng.integers(0, days))),
                            -_money(float(clients.base[who]) * 0.1), "Gutschrift Reklamation"))
        payroll = _money(18000 + 150 * math.sqrt(n))
        entries += [
            ("salary", None, month + dt.timedelta(days=min(27, days - 1)), -payroll, f"Gehaelter {month:%m/%Y}"),
            ("tax", None, month + dt.timedelta(days=9), -_money(float(rng.uniform(6000, 9000))),
             f"Umsatzsteuer-Voranmeldung {month:%m/%Y}"),
            ("supplier", None, month + dt.timedelta(days=14), -_money(float(rng.uniform(20000, 40000)) *
                                                                        max(1.0, n / 300)),
             f"Wareneinkauf {month:%m/%Y}"),
            ("fee", None, month + dt.timedelta(days=days - 1), -_money(float(rng.uniform(30, 60))),
             "Kontofuehrungsgebuehr"),
            ("transfer", None, month + dt.timedelta(days=20), -Decimal("5000.00"), "Umbuchung Tagesgeld"),
        ]
        is_last_month = mi == len(months) - 1
        acct1, acct2 = [], []
        for e in sorted(entries, key=lambda e: (e[2], str(e[4]))):
            kind, who, day, amount, ref = e
            if day > spec.end:
                continue
            to_csv = (kind in ("client", "refund") and bool(clients.pays_to_csv[who])) or kind == "walkin"
            (acct2 if to_csv else acct1).append(e)
            if kind == "transfer":
                acct2.append(("transfer_in", None, day, -amount, ref))
        pending_from = spec.end - dt.timedelta(days=2) if is_last_month else None
        balance1 = _write_camt(bank_dir / f"camt053_{OUR_IBAN_1}_{month:%Y-%m}.xml", month, acct1, clients,
                               balance1, v08=mi >= len(months) - 12, pending_from=pending_from)
        _write_sparkasse_csv(bank_dir / f"Umsaetze_{OUR_IBAN_2}_{month:%Y-%m}.csv", acct2, clients,
                                        pending_from=pending_from)
        summary.bank_transactions += len(acct1) + len(acct2)
    for fh in (invoices, activities, tickets):
        fh.close()
    _write_clients(crm_dir / "clients.csv", clients, rng, months)
    summary.files = sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if p.is_file())
    return summary


def _write_managers(path: Path) -> None:
    names = ("Anna Berg", "Jonas Keller", "Lea Wolf", "Paul Richter", "Mia Hoffmann", "Felix Braun", "Emma Koch",
             "Lukas Wagner", "Sofia Lange", "Noah Krause", "Clara Jung", "Ben Scholz")
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["manager_id", "name", "department", "hourly_cost", "currency"])
        for i, name in enumerate(names):
            dept = DEPARTMENTS[0] if i < 4 else DEPARTMENTS[1] if i < 8 else DEPARTMENTS[2]
            w.writerow([f"M{i + 1:02d}", name, dept, f"{45 + 5 * (i % 5):.2f}", CURRENCY])


def _write_clients(path: Path, c: _Clients, rng: np.random.Generator, months: list[dt.date]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["client_id", "name", "tax_id", "accounts", "industry", "size_band", "region",
                    "acquisition_channel", "created_date", "manager_id", "referred_by_client_id", "is_potential",
                    "is_reference", "is_innovator", "is_demanding", "satisfaction", "share_of_wallet",
                    "is_exclusive", "lead_stage"])
        for i in range(c.n):
            created = months[int(c.start[i])] - dt.timedelta(days=int(rng.integers(0, 400)))
            referrer = ""
            if i > 20 and rng.random() < 0.12:
                referrer = c.ids[int(rng.integers(0, i))]
            size = SIZE_BANDS[min(3, int(math.log10(max(c.base[i], 1)) - 2))] if c.base[i] >= 100 else SIZE_BANDS[0]
            w.writerow([
                c.ids[i], c.names[i].replace(" GmbH", " Gesellschaft mbH") if rng.random() < 0.1 else c.names[i],
                c.vat[i], c.ibans[i], INDUSTRIES[int(rng.integers(0, len(INDUSTRIES)))], size,
                REGIONS[int(rng.integers(0, len(REGIONS)))], "referral" if referrer else
                CHANNELS[int(rng.integers(1, len(CHANNELS)))], created.isoformat(), f"M{c.manager[i] + 1:02d}",
                referrer, str(rng.random() < 0.07).lower(), str(rng.random() < 0.04).lower(),
                str(rng.random() < 0.025).lower(), str(bool(c.demanding[i])).lower(),
                f"{min(10, max(1, rng.normal(8 - 3 * c.demanding[i], 1.5))):.0f}",
                f"{rng.uniform(0.2, 1.0):.2f}", str(rng.random() < 0.1).lower(),
                "customer",
            ])


def _party(kind: str, who, clients: _Clients) -> tuple[str | None, str | None, str | None]:
    """(name, account, tax id) of the counterparty of one entry."""
    if kind in ("client", "refund"):
        return str(clients.names[who]).upper() if who % 7 == 0 else str(clients.names[who]), \
            str(clients.ibans[who]), (str(clients.vat[who]) or None)
    if kind == "walkin":
        return who[0], who[1], None
    return {
        "salary": ("Lohn- und Gehaltskonto Sammler", "DE27100777770209299700", None),
        "tax": ("Finanzamt Hamburg-Nord", "DE10200000000020001520", "DE811208257"),
        "supplier": ("Metallwerke Sauerland GmbH", "DE44500105175407324931", "DE129273398"),
        "fee": (None, None, None),
        "transfer": (OUR_NAME, OUR_IBAN_2, None),
        "transfer_in": (OUR_NAME, OUR_IBAN_1, None),
    }[kind]


def _write_camt(path: Path, month: dt.date, entries: list[tuple], clients: _Clients, opening: Decimal, *,
                v08: bool, pending_from: dt.date | None) -> Decimal:
    ns = "urn:iso:std:iso:20022:tech:xsd:camt.053.001." + ("08" if v08 else "02")
    last = month + dt.timedelta(days=_days_in_month(month) - 1)
    booked = [e for e in entries if pending_from is None or e[2] < pending_from]
    closing = opening + sum((e[3] for e in booked), Decimal(0))
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{ns}">\n<BkToCstmrStmt>\n'
                 f"<GrpHdr><MsgId>NLIS{month:%Y%m}</MsgId><CreDtTm>{last.isoformat()}T23:10:00</CreDtTm></GrpHdr>\n"
                 f"<Stmt><Id>STMT-{month:%Y-%m}</Id><ElctrncSeqNb>{month.month}</ElctrncSeqNb>"
                 f"<CreDtTm>{last.isoformat()}T23:10:00</CreDtTm>\n"
                 f"<Acct><Id><IBAN>{OUR_IBAN_1}</IBAN></Id><Ccy>{CURRENCY}</Ccy>"
                 f"<Svcr><FinInstnId><{'BICFI' if v08 else 'BIC'}>{OUR_BIC_1}</{'BICFI' if v08 else 'BIC'}>"
                 "</FinInstnId></Svcr></Acct>\n")
        for code, amount, day in (("OPBD", opening, month), ("CLBD", closing, last)):
            fh.write(f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
                     f'<Amt Ccy="{CURRENCY}">{abs(amount):.2f}</Amt>'
                     f"<CdtDbtInd>{'CRDT' if amount >= 0 else 'DBIT'}</CdtDbtInd><Dt><Dt>{day.isoformat()}</Dt></Dt>"
                     "</Bal>\n")
        for n, (kind, who, day, amount, ref) in enumerate(entries, start=1):
            status = "PDNG" if pending_from is not None and day >= pending_from else "BOOK"
            sts = f"<Sts><Cd>{status}</Cd></Sts>" if v08 else f"<Sts>{status}</Sts>"
            incoming = amount >= 0
            name, account, tax = _party(kind, who, clients)
            role, acct_role, agent = ("Dbtr", "DbtrAcct", "DbtrAgt") if incoming else ("Cdtr", "CdtrAcct", "CdtrAgt")
            svcr_ref = f"{month:%y%m}{n:06d}"
            fh.write(f'<Ntry><NtryRef>{n}</NtryRef><Amt Ccy="{CURRENCY}">{abs(amount):.2f}</Amt>'
                     f"<CdtDbtInd>{'CRDT' if incoming else 'DBIT'}</CdtDbtInd>{sts}"
                     f"<BookgDt><Dt>{day.isoformat()}</Dt></BookgDt><ValDt><Dt>{day.isoformat()}</Dt></ValDt>"
                     f"<AcctSvcrRef>{svcr_ref}</AcctSvcrRef>"
                     "<BkTxCd><Prtry><Cd>NTRF</Cd><Issr>DK</Issr></Prtry></BkTxCd>")
            if kind == "fee":
                fh.write(f"<AddtlNtryInf>{escape(ref)}</AddtlNtryInf></Ntry>\n")
                continue
            party = ""
            if name:
                inner = f"<Nm>{escape(name)}</Nm>"
                if tax:
                    inner += f"<Id><OrgId><Othr><Id>{tax}</Id></Othr></OrgId></Id>"
                party = f"<{role}>{'<Pty>' + inner + '</Pty>' if v08 else inner}</{role}>"
            if account:
                party += f"<{acct_role}><Id><IBAN>{account}</IBAN></Id></{acct_role}>"
            bic = "BICFI" if v08 else "BIC"
            fh.write(f"<NtryDtls><TxDtls><Refs><AcctSvcrRef>{svcr_ref}</AcctSvcrRef>"
                     f"<EndToEndId>{escape(ref) if kind == 'client' else 'NOTPROVIDED'}</EndToEndId></Refs>"
                     f'<Amt Ccy="{CURRENCY}">{abs(amount):.2f}</Amt>'
                     f"<RltdPties>{party}</RltdPties>"
                     f"<RltdAgts><{agent}><FinInstnId><{bic}>DEUTDEFFXXX</{bic}></FinInstnId></{agent}></RltdAgts>"
                     f"<RmtInf><Ustrd>{escape(ref)}</Ustrd></RmtInf></TxDtls></NtryDtls>"
                     f"<AddtlNtryInf>{'GUTSCHRIFT' if incoming else 'UEBERWEISUNG'}</AddtlNtryInf></Ntry>\n")
        fh.write("</Stmt>\n</BkToCstmrStmt>\n</Document>\n")
    return closing


def _de_amount(amount: Decimal) -> str:
    text = f"{abs(amount):,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
    return ("-" if amount < 0 else "") + text


def _write_sparkasse_csv(path: Path, entries: list[tuple], clients: _Clients, *,
                         pending_from: dt.date | None) -> None:
    header = ["Auftragskonto", "Buchungstag", "Valutadatum", "Buchungstext", "Verwendungszweck", "Glaeubiger ID",
              "Mandatsreferenz", "Kundenreferenz (End-to-End)", "Sammlerreferenz", "Lastschrift Ursprungsbetrag",
              "Auslagenersatz Ruecklastschrift", "Beguenstigter/Zahlungspflichtiger", "Kontonummer/IBAN",
              "BIC (SWIFT-Code)", "Betrag", "Waehrung", "Info"]
    with path.open("w", encoding="cp1252", newline="") as fh:
        w = csv.writer(fh, delimiter=";", quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(header)
        for kind, who, day, amount, ref in entries:
            name, account, _ = _party(kind, who, clients)
            pending = pending_from is not None and day >= pending_from
            w.writerow([OUR_IBAN_2, f"{day:%d.%m.%y}", f"{day:%d.%m.%y}",
                        "GUTSCHR. UEBERWEISUNG" if amount >= 0 else "FOLGELASTSCHRIFT", ref, "", "",
                        ref if kind == "client" else "NOTPROVIDED", "", "", "", name or "", account or "",
                        "DEUTDEFFXXX" if account else "", _de_amount(amount), CURRENCY,
                        "Umsatz vorgemerkt" if pending else "Umsatz gebucht"])
