DROP TABLE IF EXISTS email_template_versions; DROP TABLE IF EXISTS email_templates;
