"""The team shell on AWS: the same pass as the desktop, run by Lambda.

``handler`` holds the three functions (tick, work, keep); ``history`` the
DynamoDB ``History``; ``links`` the signed Keep/Stop-now links;
``accounts`` which accounts and how to enter them; ``fleet_status`` what
``cloud status`` prints. Nothing imports this package but the CLI.
"""
