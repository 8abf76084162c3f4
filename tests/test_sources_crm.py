from pathlib import Path

import pytest

from clientbase.config import load_settings
from clientbase.errors import ConfigError, ParseError, UnknownFormatError
from sources import crm, registry
from sources.base import CrmRow, FileInfo, Rejected
from tests.xlsx import write_xlsx

PRESETS = Path(__file__).parent / "fixtures" / "crm" / "presets"


def rows(path, **kwargs):
    return [r for r in crm.read(path, **kwargs) if not isinstance(r, FileInfo)]


@pytest.mark.parametrize(("header", "entity"), [
    (["client_id", "name", "tax_id"], "clients"),
    (["manager_id", "name", "department", "hourly_cost"], "managers"),
    (["activity_id", "client_id", "manager_id", "activity_type", "started_at", "duration_minutes"], "activities"),
    (["ticket_id", "client_id", "opened_at", "minutes_spent"], "tickets"),
    (["invoice_id", "client_id", "issue_date", "due_date", "amount", "currency", "cost"], "invoices"),
])
def test_canonical_entity_recognised_by_columns(header, entity):
    ranked = sorted(crm.canonical_presets(), key=lambda p: -len(p.signature))
    assert crm.choose_preset(header, ranked, "f").entity == entity


def test_semicolon_dump_with_extra_columns_and_a_bad_row(tmp_path):
    path = tmp_path / "kunden.csv"
    path.write_text("\ufeffclient_id;name;tax_id;Lieblingsfarbe\n"
                    "C1;Müller GmbH;DE136695976;blau\n"
                    "C2;\"Baltic; Logistics UAB\";;\n"
                    "C3;too;many;fields;here\n", encoding="utf-8")
    assert registry.detect(path, "crm") is crm
    recs = rows(path)
    assert isinstance(recs[0], CrmRow)
    assert recs[0].entity == "clients"
    assert recs[0].values["client_id"] == "C1" and recs[0].values["tax_id"] == "DE136695976"
    assert recs[0].values["industry"] is None
    assert recs[0].extra == {"Lieblingsfarbe": "blau"}
    assert recs[1].values["name"] == "Baltic; Logistics UAB" and recs[1].values["tax_id"] is None
    assert isinstance(recs[2], Rejected) and recs[2].reason == "row has 5 fields, the header has 4"


GOLDEN = [
    ("hubspot_companies.csv", "hubspot_companies", "clients",
     {"client_id": "5210843001", "name": "Müller & Söhne GmbH", "tax_id": "DE136695976", "created_date": "2021-04-12",
      "manager_id": "Anna Berg"}),
    ("hubspot_calls.csv", "hubspot_calls", "activities",
     {"client_id": "5210843001", "duration_minutes": "12.57", "activity_type": "call",
      "started_at": "2025-03-04T10:15"}),  # 754000 ms; first of the ';'-joined company ids
    ("hubspot_deals.csv", "hubspot_deals", "invoices",
     {"invoice_id": "7001", "status": "won", "amount": "12500.50", "issue_date": "2025-03-31"}),
    ("Account.csv", "salesforce_account", "clients",
     {"client_id": "0015g00000AbCdEAAV", "created_date": "2020-01-15", "manager_id": "0055g00000XyZaBAAU"}),
    ("Opportunity.csv", "salesforce_opportunity", "invoices",
     {"client_id": "0015g00000AbCdEAAV", "status": "won", "amount": "250000", "currency": "EUR"}),
    ("Task.csv", "salesforce_task", "activities", {"duration_minutes": "15.50", "activity_type": "call"}),
    ("User.csv", "salesforce_user", "managers", {"manager_id": "0055g00000XyZaBAAU", "department": "Key Accounts"}),
    ("pipedrive_deals_ru.csv", "pipedrive_deals", "invoices",  # Russian interface headers
     {"invoice_id": "311", "client_id": "77", "status": "won", "currency": "RUB", "issue_date": "2025-02-03"}),
    ("pipedrive_organizations.csv", "pipedrive_organizations", "clients", {"client_id": "77", "name": "ООО Ромашка"}),
    ("amocrm_leads.json", "amocrm_leads", "invoices",  # status 142 won, Unix time, company under _embedded
     {"invoice_id": "19619", "client_id": "10971463", "status": "won", "issue_date": "2025-03-01"}),
    ("amocrm_companies.ndjson", "amocrm_companies", "clients", {"client_id": "10971463", "name": 'ООО "Ромашка"'}),
    ("bitrix24_deals_cp1251.csv", "bitrix24_deals", "invoices",
     {"invoice_id": "41", "client_id": "17", "status": "won", "amount": "125000.00", "issue_date": "2025-03-15"}),
]


@pytest.mark.parametrize(("name", "preset", "entity", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_vendor_presets_golden(name, preset, entity, expected):
    recs = rows(PRESETS / name)
    first = recs[0]
    assert isinstance(first, CrmRow), first
    assert (first.entity, first.extra.get("_preset")) == (entity, preset)
    for column, value in expected.items():
        assert first.values[column] == value, column


def test_amocrm_lost_status_and_bitrix_failure():
    assert rows(PRESETS / "amocrm_leads.json")[1].values["status"] == "lost"  # 143
    assert rows(PRESETS / "bitrix24_deals_cp1251.csv")[1].values["status"] == "lost"  # F


def test_every_vendor_preset_has_a_golden_file():
    assert {p.name for p in crm.vendor_presets()} == {g[1] for g in GOLDEN} | {"bitrix24_companies"}


def test_missing_required_column_names_file_column_and_preset(tmp_path):
    path = tmp_path / "deals.csv"
    text = (PRESETS / "hubspot_deals.csv").read_text().replace('"Amount",', '"Betrag",')
    path.write_text(text)
    with pytest.raises(ParseError) as err:
        rows(path)
    message = str(err.value)
    assert message.startswith(f"{path}, field Amount: looks like a HubSpot export (preset hubspot_deals) but "
                              "lacks the column 'Amount' needed for amount")


def test_unknown_dump_names_the_closest_presets(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("Record ID,Something\n1,2\n")
    with pytest.raises(UnknownFormatError, match="match no CRM preset; closest: hubspot"):
        rows(path)


def test_user_mapping_in_config_overrides_presets(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "config.yaml").write_text(
        "crm:\n  mappings:\n    - name: our_erp_customers\n      vendor: ERP\n      entity: clients\n"
        "      signature: [Kundennummer, Firma]\n      columns:\n        client_id: Kundennummer\n"
        "        name: Firma\n        tax_id: USt-IdNr\n")
    settings = load_settings(tmp_path)
    path = tmp_path / "kunden.csv"
    path.write_text("Kundennummer;Firma;USt-IdNr\n4711;Alpen Logistik GmbH;DE136695976\n")
    (rec,) = rows(path, user_presets=settings.crm.mappings)
    assert (rec.entity, rec.values["client_id"], rec.values["tax_id"], rec.extra["_preset"]) == (
        "clients", "4711", "DE136695976", "our_erp_customers")


def test_bad_user_mapping_is_a_config_error(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "config.yaml").write_text(
        "crm:\n  mappings:\n    - name: x\n      vendor: ERP\n      entity: kunden\n      signature: [a]\n"
        "      columns: {client_id: a}\n")
    with pytest.raises(ConfigError, match="crm.mappings.0.entity"):
        load_settings(tmp_path)


def test_xlsx_dump(tmp_path):
    path = write_xlsx(tmp_path / "managers.xlsx", [["manager_id", "name", "department", "hourly_cost"],
                                                   ["M1", "Anna Berg", "Key Accounts", 55.5],
                                                   ["M2", "Jonas Keller", "SMB Sales", 48]])
    recs = rows(path)
    assert [(r.values["manager_id"], r.values["hourly_cost"]) for r in recs] == [("M1", "55.5"), ("M2", "48")]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(UnknownFormatError, match="file is empty"):
        registry.detect(path, "crm")


def test_json_dump_with_a_bad_byte_after_the_sample_is_a_clean_error(tmp_path):
    """Found by atheris: the encoding sample decoded, the whole file did not."""
    path = tmp_path / "companies.json"
    path.write_bytes(b"[\xe6")
    with pytest.raises(ParseError, match=r"not valid utf-8 at byte 1 .*export the dump as UTF-8"):
        list(crm.read(path))
