use es_core::Aggregate;

#[derive(Default, Aggregate)]
#[es(category = "Account")]
struct Account {
    open: bool,
}

fn main() {}
