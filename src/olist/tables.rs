//! The olist tables: columns named as in the Olist CSV headers, real primary keys.
//! REPLICA IDENTITY FULL gives CDC the complete before-image of updates and deletes,
//! which downstream aggregates need to retract old values.

pub struct Table {
    pub schema: &'static str,
    pub name: &'static str,
    /// The CSV file this table is loaded from (when present in the data folder).
    pub csv: &'static str,
    pub ddl: &'static str,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    /// CDC topic of the table.
    pub fn topic(&self) -> String {
        format!("olist.{}.{}", self.schema, self.name)
    }
}

pub const TABLES: &[Table] = &[
    Table {
        schema: "ecommerce",
        name: "customers",
        csv: "olist_customers_dataset.csv.gz",
        ddl: "customer_id text PRIMARY KEY, customer_unique_id text NOT NULL, customer_zip_code_prefix text, customer_city text, customer_state text, \
              customer_email text",
    },
    Table {
        schema: "ecommerce",
        name: "orders",
        csv: "olist_orders_dataset.csv.gz",
        ddl: "order_id text PRIMARY KEY, customer_id text NOT NULL, order_status text, order_purchase_timestamp timestamp, order_approved_at timestamp, \
              order_delivered_carrier_date timestamp, order_delivered_customer_date timestamp, order_estimated_delivery_date timestamp",
    },
    Table {
        schema: "ecommerce",
        name: "order_items",
        csv: "olist_order_items_dataset.csv.gz",
        ddl: "order_id text NOT NULL, order_item_id integer NOT NULL, product_id text, seller_id text, shipping_limit_date timestamp, \
              price numeric(10,2), freight_value numeric(10,2), PRIMARY KEY (order_id, order_item_id)",
    },
    Table {
        schema: "ecommerce",
        name: "order_payments",
        csv: "olist_order_payments_dataset.csv.gz",
        ddl: "order_id text NOT NULL, payment_sequential integer NOT NULL, payment_type text, payment_installments integer, \
              payment_value numeric(10,2), PRIMARY KEY (order_id, payment_sequential)",
    },
    Table {
        schema: "ecommerce",
        name: "order_reviews",
        csv: "olist_order_reviews_dataset.csv.gz",
        ddl: "review_id text NOT NULL, order_id text NOT NULL, review_score integer, review_comment_title text, review_comment_message text, \
              review_creation_date timestamp, review_answer_timestamp timestamp, PRIMARY KEY (review_id, order_id)",
    },
    Table {
        schema: "ecommerce",
        name: "products",
        csv: "olist_products_dataset.csv.gz",
        ddl: "product_id text PRIMARY KEY, product_category_name text, product_name_lenght integer, product_description_lenght integer, \
              product_photos_qty integer, product_weight_g integer, product_length_cm integer, product_height_cm integer, product_width_cm integer",
    },
    Table {
        schema: "ecommerce",
        name: "sellers",
        csv: "olist_sellers_dataset.csv.gz",
        ddl: "seller_id text PRIMARY KEY, seller_zip_code_prefix text, seller_city text, seller_state text",
    },
    Table {
        schema: "ecommerce",
        name: "product_category_name_translation",
        csv: "product_category_name_translation.csv.gz",
        ddl: "product_category_name text PRIMARY KEY, product_category_name_english text",
    },
    Table {
        schema: "marketing",
        name: "marketing_qualified_leads",
        csv: "olist_marketing_qualified_leads_dataset.csv.gz",
        ddl: "mql_id text PRIMARY KEY, first_contact_date date, landing_page_id text, origin text",
    },
    Table {
        schema: "marketing",
        name: "closed_deals",
        csv: "olist_closed_deals_dataset.csv.gz",
        ddl: "mql_id text PRIMARY KEY, seller_id text, sdr_id text, sr_id text, won_date timestamp, business_segment text, lead_type text, \
              lead_behaviour_profile text, has_company text, has_gtin text, average_stock text, business_type text, \
              declared_product_catalog_size double precision, declared_monthly_revenue double precision",
    },
];

pub fn by_name(qualified: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.qualified() == qualified)
}

/// DDL for the whole database (drops what exists: seeding starts from scratch).
pub fn create_script() -> String {
    let mut sql = String::from("DROP SCHEMA IF EXISTS ecommerce CASCADE; DROP SCHEMA IF EXISTS marketing CASCADE;\nCREATE SCHEMA ecommerce; CREATE SCHEMA marketing;\n");
    for t in TABLES {
        sql.push_str(&format!("CREATE TABLE {} ({});\nALTER TABLE {} REPLICA IDENTITY FULL;\n", t.qualified(), t.ddl, t.qualified()));
    }
    sql
}
