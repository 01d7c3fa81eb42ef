DROP TABLE IF EXISTS job_failures;
