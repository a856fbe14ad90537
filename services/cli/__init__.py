"""``idcctl``: one command line for customers, telco ops, the billing team and admins."""
