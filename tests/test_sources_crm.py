import pytest

from clientbase.errors import UnknownFormatError
from sources import crm, registry
from sources.base import CrmRow, Rejected


@pytest.mark.parametrize(("header", "entity"), [
    (["client_id", "name", "tax_id"], "clients"),
    (["manager_id", "name", "department", "hourly_cost"], "managers"),
    (["activity_id", "client_id", "manager_id", "activity_type", "started_at", "duration_minutes"], "activities"),
    (["ticket_id", "client_id", "opened_at", "minutes_spent"], "tickets"),
    (["invoice_id", "client_id", "issue_date", "due_date", "amount", "currency", "cost"], "invoices"),
    (["foo", "bar"], None),
])
def test_entity_recognised_by_columns(header, entity):
    assert crm.recognise(header) == entity


def test_semicolon_dump_with_extra_columns_and_a_bad_row(tmp_path):
    path = tmp_path / "kunden.csv"
    path.write_text("\ufeffclient_id;name;tax_id;Lieblingsfarbe\n"
                    "C1;Müller GmbH;DE136695976;blau\n"
                    "C2;\"Baltic; Logistics UAB\";;\n"
                    "C3;too;many;fields;here\n", encoding="utf-8")
    assert registry.detect(path, "crm") is crm
    recs = list(crm.read(path))
    assert isinstance(recs[0], CrmRow)
    assert recs[0].entity == "clients"
    assert recs[0].values["client_id"] == "C1" and recs[0].values["tax_id"] == "DE136695976"
    assert recs[0].values["industry"] is None
    assert recs[0].extra == {"lieblingsfarbe": "blau"}
    assert recs[1].values["name"] == "Baltic; Logistics UAB" and recs[1].values["tax_id"] is None
    assert isinstance(recs[2], Rejected) and recs[2].reason == "row has 5 fields, the header has 4"


def test_unknown_crm_file(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(UnknownFormatError, match=r"notes.csv: unrecognised crm file format"):
        registry.detect(path, "crm")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(UnknownFormatError, match="file is empty"):
        registry.detect(path, "crm")
