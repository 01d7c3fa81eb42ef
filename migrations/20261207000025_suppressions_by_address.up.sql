-- The operators' console looks an address up across every account's suppression list
-- (by its blind index); the unique (owner_id, address_index) index cannot serve a
-- lookup without the owner.
CREATE INDEX suppressions_address_idx ON suppressions (address_index);
