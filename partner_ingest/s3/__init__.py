"""S3 side: object keys, streaming uploads through boto3's transfer manager, verification."""
