"""The team shell on AWS: Lambda handlers, DynamoDB history, SNS/Slack, CloudFormation."""
