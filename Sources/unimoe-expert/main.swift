import Foundation
import Stages

exit(RoleMain.main("expert", CommandLine.arguments))
