//! The CVM metadata service's answers: the role list (`cam/security-credentials/`) and a role's
//! credentials (`cam/security-credentials/ROLE`), decoded as `CvmRole::fetch` does.
use afl::fuzz;
use cwp_portwatch::credentials::cvm_role;
use reqwest::Url;

fn main() {
    let list =
        Url::parse("http://metadata.tencentyun.com/latest/meta-data/cam/security-credentials/")
            .expect("a URL");
    let role = list.join("role").expect("a URL");
    fuzz!(|data: &[u8]| {
        let _ = cvm_role::parse_role_list(&list, data);
        let _ = cvm_role::parse_credentials(&role, data);
    });
}
