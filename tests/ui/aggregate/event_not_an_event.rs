use es_core::Aggregate;

enum AccountEvent {
    Opened,
}

#[derive(Default, Aggregate)]
#[es(event = AccountEvent)]
struct Account {
    open: bool,
}

fn main() {}
