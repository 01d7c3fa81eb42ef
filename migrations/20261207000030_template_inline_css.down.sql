ALTER TABLE email_template_versions DROP COLUMN inline_css;
