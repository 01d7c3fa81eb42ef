-- A template version may ask for its HTML's <style> rules to be inlined into the
-- elements they match (shared::mail::compose) when a message is rendered.
ALTER TABLE email_template_versions ADD COLUMN inline_css boolean NOT NULL DEFAULT false;
