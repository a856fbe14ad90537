"""The billing entities file: parsed strictly, with a default entity for unknown tenants."""

from decimal import Decimal
from pathlib import Path

import pytest

from services.billing.directory import load_directory
from services.billing.domain.entities import parse_directory
from services.common.config import ConfigError
from services.common.errors import InvalidArgument, NotFound

# What every entity needs besides the fields a case is about.
TERMS = (
    '\npayment_terms_days = 30\n[entities.x.remittance]\nbank = "B"\naccount_name = "X"\n'
    'account_number = "1"\nswift_bic = "BBBBSGSG"'
)
DATA = Path(__file__).parents[3] / "services" / "billing" / "data" / "billing_entities.toml"


def test_shipped_file_parses() -> None:
    directory = parse_directory(DATA.read_text())
    sg = directory.entity("sg-telco")
    assert (sg.tax_rate, str(sg.time_zone)) == (Decimal("0.09"), "Asia/Singapore")
    assert directory.entity("cq-telco").tax_rate == Decimal("0.06")
    yangtze = directory.customer("yangtze-cq")
    assert (yangtze.entity.id, yangtze.currency, str(yangtze.time_zone)) == (
        "cq-telco", "CNY", "Asia/Shanghai"
    )
    assert str(directory.customer("acme-us").time_zone) == "America/Los_Angeles"


def test_unknown_tenant_gets_the_default_entity() -> None:
    customer = parse_directory(DATA.read_text()).customer("new-tenant")
    assert (customer.entity.id, customer.legal_name, customer.currency) == (
        "sg-telco", "new-tenant", None
    )
    assert not customer.configured


def test_unknown_entity_is_not_found() -> None:
    with pytest.raises(NotFound, match="'nope' does not exist"):
        parse_directory(DATA.read_text()).entity("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('default_entity = "x"\n[entities.x]\nlegal_name = "X"\ntax_rate = 0.09\n'
         'time_zone = "UTC"\ninvoice_prefix = "X"' + TERMS, "tax_rate must be a non-empty string"),
        ('default_entity = "x"\n[entities.x]\nlegal_name = "X"\ntax_rate = "0.09"\n'
         'time_zone = "Mars/Base"\ninvoice_prefix = "X"', "not an IANA time zone"),
        ('default_entity = "y"\n[entities.x]\nlegal_name = "X"\ntax_rate = "0.09"\n'
         'time_zone = "UTC"\ninvoice_prefix = "X"' + TERMS, "default_entity 'y' is not an entity"),
        ('default_entity = "x"\n[entities.x]\nlegal_name = "X"\ntax_rate = "0.09"\n'
         'time_zone = "UTC"\ninvoice_prefix = "X"' + TERMS + '\n[customers.c]\nentity = "x"\n'
         'legal_name = "C"\ncurrency = "EUR"', "'EUR' is not a billing currency"),
    ],
)
def test_bad_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_directory(text)


ENTITY = 'default_entity = "x"\n[entities.x]\nlegal_name = "X"\ntax_rate = "0.09"\n' \
    'time_zone = "UTC"\ninvoice_prefix = "X"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (ENTITY, "payment_terms_days must be a whole number 0 to 365"),
        (ENTITY + "payment_terms_days = 400\n", "payment_terms_days must be a whole number"),
        (ENTITY + 'payment_terms_days = "30"\n', "payment_terms_days must be a whole number"),
        (ENTITY + "payment_terms_days = 30\n", r"\[entities.x\] remittance: a table with bank"),
        (ENTITY + TERMS.replace('swift_bic = "BBBBSGSG"', ""), "swift_bic must be a non-empty"),
    ],
)
def test_an_entity_without_terms_or_remittance_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_directory(text)


def test_the_shipped_entities_print_their_terms_and_remittance() -> None:
    cq = parse_directory(DATA.read_text()).entity("cq-telco")
    assert (cq.payment_terms_days, cq.locale, cq.remittance.swift_bic) == (
        45, "zh_Hans_CN", "ICBKCNBJCQG"
    )
    assert cq.remittance.lines()[3] == "SWIFT/BIC: ICBKCNBJCQG"


def test_a_locale_babel_does_not_know_stops_the_service_at_start(tmp_path: Path) -> None:
    path = tmp_path / "entities.toml"
    path.write_text(ENTITY + 'locale = "xx_YY"' + TERMS)
    with pytest.raises(ConfigError, match=r"IDC_BILLING_ENTITIES_FILE: .*locale 'xx_YY'"):
        load_directory(path)
