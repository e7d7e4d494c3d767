fn main() {
    println!("wbs");
}
