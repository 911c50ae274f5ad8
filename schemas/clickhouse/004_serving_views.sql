-- Serving views: stock figures exactly as wms/OPERATIONS.md defines them, over the
-- watermark-cut current state (cur_*). Parameterised by region, owner id and SKU id
-- (sku_id = 0: every SKU of the owner) so each read touches one owner/SKU range of the
-- read-path copies; the query layer resolves global codes to these ids first.

-- Balance rows of the key(s) with their location's sellable flag and their lot.
CREATE VIEW IF NOT EXISTS balance_p ${ON_CLUSTER} AS
SELECT
    i.region AS region, i.warehouse_id AS warehouse_id, i.owner_id AS owner_id,
    i.sku_id AS sku_id, i.id AS id, i.location_id AS location_id, i.lot_id AS lot_id,
    i.status AS status, i.qty_on_hand AS qty_on_hand, i.qty_allocated AS qty_allocated,
    i.in_date AS in_date,
    coalesce(l.sellable, false) AS sellable, l.code AS location_code,
    lt.lot_no AS lot_no, lt.production_date AS production_date,
    lt.expiry_date AS expiry_date, lt.first_received_at AS first_received_at
FROM cur_inventory_by_sku AS i
LEFT JOIN
(
    SELECT id, sellable, code FROM cur_location
    WHERE region = {region:String} AND id IN (
        SELECT location_id FROM cur_inventory_by_sku
        WHERE region = {region:String} AND owner_id = {owner_id:Int64}
            AND ({sku_id:Int64} = 0 OR sku_id = {sku_id:Int64}))
) AS l ON l.id = i.location_id
LEFT JOIN
(
    SELECT id, lot_no, production_date, expiry_date, first_received_at FROM cur_lot
    WHERE region = {region:String} AND id IN (
        SELECT lot_id FROM cur_inventory_by_sku
        WHERE region = {region:String} AND owner_id = {owner_id:Int64}
            AND ({sku_id:Int64} = 0 OR sku_id = {sku_id:Int64}))
) AS lt ON lt.id = i.lot_id
WHERE i.region = {region:String} AND i.owner_id = {owner_id:Int64}
    AND ({sku_id:Int64} = 0 OR i.sku_id = {sku_id:Int64})
SETTINGS join_use_nulls = 1;

-- Open inbound quantity per (warehouse, sku) of the owner.
CREATE VIEW IF NOT EXISTS inbound_expected_p ${ON_CLUSTER} AS
SELECT o.warehouse_id AS warehouse_id, il.sku_id AS sku_id,
    sum(greatest(toInt64(il.qty_expected) - il.qty_received, 0)) AS inbound_expected
FROM cur_inbound_line_by_sku AS il
INNER JOIN
(
    SELECT id, warehouse_id FROM cur_inbound_order
    WHERE region = {region:String} AND owner_id = {owner_id:Int64}
        AND status IN ('CREATED', 'IN_TRANSIT', 'ARRIVED', 'RECEIVING')
) AS o ON o.id = il.inbound_order_id
WHERE il.region = {region:String}
    AND il.sku_id IN (
        SELECT id FROM cur_sku_by_code
        WHERE region = {region:String} AND owner_id = {owner_id:Int64}
            AND ({sku_id:Int64} = 0 OR id = {sku_id:Int64}))
GROUP BY warehouse_id, sku_id;

-- Stock figures per (warehouse, sku) of one owner in one region, with global codes.
-- Keys with no balance rows and inbound_expected = 0 are absent.
CREATE VIEW IF NOT EXISTS stock_p ${ON_CLUSTER} AS
SELECT
    {region:String} AS region, f.warehouse_id AS warehouse_id,
    {owner_id:Int64} AS owner_id, f.sku_id AS sku_id,
    ow.code AS owner, wh.code AS warehouse, sk.sku_code AS sku,
    f.on_hand AS on_hand, f.available AS available, f.allocated AS allocated,
    f.pending_putaway AS pending_putaway, f.qc_hold AS qc_hold, f.frozen AS frozen,
    f.damaged AS damaged, f.returned AS returned, f.expired AS expired,
    f.inbound_expected AS inbound_expected, f.earliest_expiry AS earliest_expiry,
    mv.last_movement_at AS last_movement_at
FROM
(
    SELECT warehouse_id, sku_id,
        sum(on_hand) AS on_hand, sum(available) AS available, sum(allocated) AS allocated,
        sum(pending_putaway) AS pending_putaway, sum(qc_hold) AS qc_hold,
        sum(frozen) AS frozen, sum(damaged) AS damaged, sum(returned) AS returned,
        sum(expired) AS expired, sum(inbound) AS inbound_expected,
        min(expiry) AS earliest_expiry, max(has_balance) AS any_balance
    FROM
    (
        SELECT warehouse_id, sku_id,
            toInt64(qty_on_hand) AS on_hand,
            toInt64(qty_allocated) AS allocated,
            if(status = 'AVAILABLE' AND sellable, toInt64(qty_on_hand) - qty_allocated, 0)
                AS available,
            if(status = 'PENDING_PUTAWAY', toInt64(qty_on_hand), 0) AS pending_putaway,
            if(status = 'QC_HOLD', toInt64(qty_on_hand), 0) AS qc_hold,
            if(status = 'FROZEN', toInt64(qty_on_hand), 0) AS frozen,
            if(status = 'DAMAGED', toInt64(qty_on_hand), 0) AS damaged,
            if(status = 'RETURNED', toInt64(qty_on_hand), 0) AS returned,
            if(status = 'EXPIRED', toInt64(qty_on_hand), 0) AS expired,
            toInt64(0) AS inbound,
            if(status = 'AVAILABLE' AND sellable AND qty_on_hand > qty_allocated,
                expiry_date, NULL) AS expiry,
            1 AS has_balance
        FROM balance_p(region = {region:String}, owner_id = {owner_id:Int64},
            sku_id = {sku_id:Int64})
        UNION ALL
        SELECT warehouse_id, sku_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, inbound_expected,
            CAST(NULL, 'Nullable(Date32)'), 0
        FROM inbound_expected_p(region = {region:String}, owner_id = {owner_id:Int64},
            sku_id = {sku_id:Int64})
    )
    GROUP BY warehouse_id, sku_id
    HAVING any_balance = 1 OR inbound_expected > 0
) AS f
LEFT JOIN
(
    SELECT warehouse_id, sku_id, max(occurred_at) AS last_movement_at
    FROM cur_inventory_txn_by_sku
    WHERE region = {region:String} AND owner_id = {owner_id:Int64}
        AND ({sku_id:Int64} = 0 OR sku_id = {sku_id:Int64})
    GROUP BY warehouse_id, sku_id
) AS mv ON mv.warehouse_id = f.warehouse_id AND mv.sku_id = f.sku_id
LEFT JOIN
(
    SELECT code FROM cur_owner WHERE region = {region:String} AND id = {owner_id:Int64}
) AS ow ON 1 = 1
LEFT JOIN (SELECT id, code FROM cur_warehouse WHERE region = {region:String}) AS wh
    ON wh.id = f.warehouse_id
LEFT JOIN
(
    SELECT id, sku_code FROM cur_sku_by_code
    WHERE region = {region:String} AND owner_id = {owner_id:Int64}
        AND ({sku_id:Int64} = 0 OR id = {sku_id:Int64})
) AS sk ON sk.id = f.sku_id
SETTINGS join_use_nulls = 1;

-- Stock figures per lot (balance rows with a lot), in FEFO order per (warehouse, sku).
CREATE VIEW IF NOT EXISTS stock_lots_p ${ON_CLUSTER} AS
SELECT warehouse_id, sku_id, lot_id, any(lot_no) AS lot_no,
    any(production_date) AS production_date, any(expiry_date) AS expiry_date,
    any(first_received_at) AS first_received_at,
    sum(toInt64(qty_on_hand)) AS on_hand,
    sum(if(status = 'AVAILABLE' AND sellable, toInt64(qty_on_hand) - qty_allocated, 0))
        AS available,
    sum(toInt64(qty_allocated)) AS allocated,
    sum(if(status = 'PENDING_PUTAWAY', toInt64(qty_on_hand), 0)) AS pending_putaway,
    sum(if(status = 'QC_HOLD', toInt64(qty_on_hand), 0)) AS qc_hold,
    sum(if(status = 'FROZEN', toInt64(qty_on_hand), 0)) AS frozen,
    sum(if(status = 'DAMAGED', toInt64(qty_on_hand), 0)) AS damaged,
    sum(if(status = 'RETURNED', toInt64(qty_on_hand), 0)) AS returned,
    sum(if(status = 'EXPIRED', toInt64(qty_on_hand), 0)) AS expired
FROM balance_p(region = {region:String}, owner_id = {owner_id:Int64}, sku_id = {sku_id:Int64})
WHERE lot_id IS NOT NULL
GROUP BY warehouse_id, sku_id, lot_id
ORDER BY warehouse_id, sku_id, expiry_date ASC NULLS LAST, first_received_at ASC NULLS LAST,
    lot_no;
