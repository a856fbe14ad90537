"""The partner REST/JSON facade: MEF LSO Sonata-style resources over the order service's
use cases, served by uvicorn in the order service's process (``IDC_ORDER_REST_ADDRESS``)."""
